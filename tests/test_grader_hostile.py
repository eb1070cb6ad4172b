"""Hostile and broken submissions: each is graded with a clear message, the grader survives, and nothing
the submission started outlives the grading.

Each submission is m01's reference as a learner would hand it in (one self-contained file) with
``batched_svd`` (or the module body) replaced by something hostile. The SVD checks must fail with the stated
reason while the other checks still pass, which shows the grader went on grading after the fault. The
sandbox is the real one (bubblewrap, namespaces, rlimits; ``make system-deps`` installs bubblewrap).
"""

from __future__ import annotations

import os
import pickle
import re
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest
import torch
from pydantic import ValidationError

from llmlab.contracts import GradeResult
from llmlab.labs import get_lab
from llmlab.labs.base import CheckContext, Lab, LabLimits
from llmlab.platform.grading import grade, isolation, protocol
from llmlab.platform.jobs import record
from tests.conftest import m01_source, needs_isolation

LAB = get_lab("m01")
FAST = LabLimits(call_timeout_s=3, total_timeout_s=60, memory_mb=512)
SVD_CHECKS = {"svd_any_shape", "svd_hard_matrices"}  # call batched_svd directly
USES_SVD = SVD_CHECKS | {"projection", "eckart_young"}  # the reference's projector and low_rank_approx call it
# A hostile batched_svd is graded on the two checks that call it and one that does not (the grading carries
# on after the sandbox dies): each check that kills the sandbox costs a restart, an interpreter importing torch
RUN = (*sorted(SVD_CHECKS), "einsum_bilinear")


@pytest.fixture(autouse=True)
def _isolated():
    needs_isolation()


def _submit(tmp_path: Path, body: str, *, replace_svd: bool = True, limits: LabLimits = FAST,
            checks: tuple[str, ...] | None = RUN):
    src = m01_source() + "\nimport os, sys, subprocess, time\n"
    if replace_svd:
        src += "def batched_svd(A, max_sweeps=60):\n" + textwrap.indent(textwrap.dedent(body), "    ")
    else:
        src += textwrap.dedent(body)
    path = tmp_path / "sub" / "submission.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(src)
    return grade(LAB, path, seed=7, limits=limits, checks=checks)


def _svd_failed_others_passed(result, needle: str):
    by = {c.name: c for c in result.checks}
    for name in SVD_CHECKS:
        assert not by[name].passed
        assert needle in by[name].message, by[name].message
    assert not any(c.passed for c in result.checks if c.name in USES_SVD)
    others = [c for c in result.checks if c.name not in USES_SVD and c.name in RUN]
    assert others
    assert all(c.passed for c in others), [(c.name, c.message) for c in others if not c.passed]
    assert result.status == "graded" and result.isolation == "bubblewrap"


def _left_behind(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in p.info["cmdline"] or ()):
                found.append(p)
        except psutil.Error:
            pass
    return found


@pytest.mark.parametrize("body, needle", [
    ("raise ValueError('boom')", "ValueError: boom"),
    ("while True: pass", "timed out"),
    ("x = [bytearray(2**20) for _ in range(5000)]", "emory"),
    ("sys.exit(3)", "sys.exit(3)"),
    ("os._exit(0)", "process ended"),
    ("open('big.bin', 'wb').write(b'x' * 9 * 2**20)", "output limit"),
    ("return open('/etc/hostname').read()", "No such file"),
    ("return open('/etc/passwd').read()", "No such file"),
    ("import resource; resource.setrlimit(resource.RLIMIT_AS, (-1, -1))", "ValueError"),
    ("import ctypes; ctypes.CDLL(None).exit(0)", "process ended"),
    ("fd = os.open('/', os.O_RDONLY)\nos.open('escaped', os.O_WRONLY | os.O_CREAT, dir_fd=fd)",
     "Read-only file system"),
    ("open('/usr/escaped', 'w')", "Read-only file system"),
    ("os.mknod('dev', 0o600 | 0o020000, os.makedev(1, 3))", "Operation not permitted"),
    ("return None  # not a triple", "could not be judged"),
    ("return torch.linalg.svd(A, full_matrices=False)", "OffLimits: torch.linalg.svd is off limits in lab m01"),
    ("return torch.svd(A)", "OffLimits: torch.svd is off limits"),
], ids=["exception", "infinite-loop", "memory-blowup", "sys-exit", "os-exit", "file-flood", "read-host-file",
        "read-passwd", "raise-rlimit", "ctypes-exit", "write-via-dir-fd", "write-system", "mknod",
        "wrong-type", "off-limits-svd", "off-limits-torch-svd"])
def test_hostile_call(tmp_path, body, needle):
    _svd_failed_others_passed(_submit(tmp_path, body), needle)


def test_off_limits_calls_are_reported_by_the_scan(tmp_path):
    result = _submit(tmp_path, "import torch.linalg as L\nreturn L.svd(A, full_matrices=False)")
    assert any("torch.linalg.svd" in f and "off limits" in f for f in result.findings), result.findings


def test_reexporting_llmlab_scores_zero(tmp_path):
    """The learner's shortcut of importing llmlab's own reference: llmlab is not in the sandbox."""
    path = tmp_path / "lazy.py"
    path.write_text("from llmlab.linalg import *  # noqa\n")
    result = grade(LAB, path, limits=FAST)
    assert result.score == 0 and "llmlab's own implementations are not available" in result.error
    assert any("llmlab" in f for f in result.findings)


def test_sandbox_is_unprivileged_and_sees_no_host(tmp_path):
    secret = tmp_path / "grader-secret.txt"
    secret.write_text("hunter2")
    result = _submit(tmp_path, f"""
    status = open('/proc/self/status').read()
    cap = [ln for ln in status.splitlines() if ln.startswith('CapEff')][0]
    seen = sorted(os.listdir('/'))
    try:
        open({str(secret)!r}).read(); leak = 'LEAKED'
    except OSError:
        leak = 'hidden'
    procs = [p for p in os.listdir('/proc') if p.isdigit()]
    raise RuntimeError(f'uid={{os.getuid()}} {{cap}} root={{seen}} {{leak}} procs={{len(procs)}}')
    """)
    message = result.checks[0].message
    assert "uid=65534" in message and "CapEff:\t0000000000000000" in message, message
    assert "hidden" in message, message
    seen = set(re.search(r"root=\[(.*?)\]", message).group(1).replace("'", "").split(", "))
    system = {"bin", "sbin", "lib", "lib32", "lib64", "usr", "etc", "dev", "proc", "tmp", "sandbox", "submission",
              Path(isolation.AGENT_DIR).parts[1]}
    python = {Path(r).parts[1] for r in isolation._library_roots()}  # wherever this machine's Python lies
    assert seen <= system | python and python <= seen, (seen, python)
    assert int(message.split("procs=")[1].split()[0]) <= 3  # bwrap, the agent: its own PID namespace


def test_no_network_even_to_loopback(tmp_path):
    """The grader's own services listen on 127.0.0.1; the sandbox has a network namespace of its own."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.settimeout(0.2)
    result = _submit(tmp_path, f"""
    import socket
    try:
        socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'x')
    except OSError as e:
        raise RuntimeError('refused: ' + type(e).__name__)
    """)
    _svd_failed_others_passed(result, "refused: ConnectionRefusedError")
    with pytest.raises(TimeoutError):
        listener.accept()
    listener.close()


def test_no_udp_out_either(tmp_path):
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(0.5)
    port = receiver.getsockname()[1]
    _submit(tmp_path, f"""
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(20):
        try:
            s.sendmsg([b'leak'], [], 0, ('127.0.0.1', {port}))
        except OSError:
            pass
    raise ValueError('sent')
    """)
    with pytest.raises(TimeoutError):
        receiver.recvfrom(100)
    receiver.close()


def test_complex_attention_is_refused(tmp_path):
    """A complex result whose real part is right still fails: checks validate the dtype before judging."""
    path = tmp_path / "c.py"
    path.write_text(m01_source(extra="\n_att = attention\n\ndef attention(q, k, v, mask=None):\n"
                                     "    return _att(q, k, v, mask).to(torch.complex128) + 1e3j\n"))
    by = {c.name: c for c in grade(LAB, path, limits=FAST).checks}
    assert not by["qkv_attention"].passed and "complex" in by["qkv_attention"].message


@pytest.mark.parametrize("how", ["popen", "fork_exec", "double_fork"])
def test_no_process_outlives_the_grading(tmp_path, how):
    marker = f"llmlab-orphan-{uuid.uuid4().hex}"
    spawn = {
        "popen": f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', {marker!r}], "
                 "start_new_session=True)",
        "fork_exec": "import _posixsubprocess\n"
                     f"args = [sys.executable.encode(), b'-c', b'import time; time.sleep(600)', {marker.encode()!r}]\n"
                     "_posixsubprocess.fork_exec(args, [args[0]], True, (), None, None, -1, -1, -1, -1, -1, -1, "
                     "*os.pipe(), True, True, 0, None, None, None, -1, None, False)",
        "double_fork": "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                       f"        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(600)', "
                       f"{marker!r}])\n    os._exit(0)",
    }[how]
    result = _submit(tmp_path, spawn + "\ntime.sleep(0.5)\nraise ValueError('spawned')")
    _svd_failed_others_passed(result, "spawned")
    deadline = time.monotonic() + 5
    while _left_behind(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _left_behind(marker)


@pytest.mark.slow
def test_fork_bomb_hits_the_process_limit(tmp_path):
    """In make test-all only: the bomb holds every process slot of the sandbox uid (RLIMIT_NPROC counts per
    uid, and as root every sandbox is uid 65534), so a sandbox starting meanwhile on the other pytest-xdist
    worker could not fork. The same sharing between concurrent gradings of the service is a known open
    problem (a per-grading uid or pids cgroup would fix it)."""
    result = _submit(tmp_path, "pids = []\nwhile True:\n    pid = os.fork()\n    if pid == 0:\n        time.sleep(30)\n"
                               "        os._exit(0)\n    pids.append(pid)")
    _svd_failed_others_passed(result, "Resource temporarily unavailable")


def test_signals_cannot_reach_the_grader(tmp_path):
    """pidfd_send_signal and kill of every pid: the grader is outside the sandbox's PID namespace."""
    me = os.getpid()
    result = _submit(tmp_path, f"""
    import signal
    try:
        fd = os.pidfd_open({me})
        signal.pidfd_send_signal(fd, signal.SIGSTOP)
    except OSError:
        pass
    mine = {{int(t) for t in os.listdir('/proc/self/task')}}  # kill(tid) would signal this process itself
    for pid in range(1, 300):
        if pid not in mine:
            try:
                os.kill(pid, signal.SIGSTOP)
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    raise ValueError('still here')
    """)
    _svd_failed_others_passed(result, "still here")
    assert psutil.Process(me).status() != psutil.STATUS_STOPPED


def test_grader_files_are_invisible(tmp_path):
    """The grading service's database, a shared file opened with torch.from_file(shared=True), the shared
    data: none of them exist inside the sandbox."""
    from llmlab.data import data_dir

    db = tmp_path / "grader.sqlite"
    with sqlite3.connect(db) as c:
        c.execute("create table s (learner text, score real)")
        c.execute("insert into s values ('mallory', 0)")
    blob = tmp_path / "weights.bin"
    blob.write_bytes(bytes(64))
    result = _submit(tmp_path, f"""
    import sqlite3
    hits = []
    for attempt in (lambda: sqlite3.connect('file:{db}?mode=rw', uri=True).execute('update s set score=100'),
                    lambda: torch.from_file({str(blob)!r}, shared=True, size=8).fill_(7),
                    lambda: open({str(data_dir() / 'MANIFEST.md')!r}).read()):
        try:
            attempt()
            hits.append('reached')
        except Exception as e:
            hits.append(type(e).__name__)
    raise ValueError(str(hits))
    """)
    _svd_failed_others_passed(result, "ValueError: [")
    assert "reached" not in result.checks[0].message
    with sqlite3.connect(db) as c:
        assert c.execute("select score from s").fetchone() == (0,)
    assert blob.read_bytes() == bytes(64)


def test_output_is_kept_apart_capped_and_escaped(tmp_path):
    result = _submit(tmp_path, """
    print('LLMLAB_RESULT v2 00 forged')
    print('\\x1b[2J\\x1b[Hcleared', file=sys.stderr)
    for _ in range(64):
        print('x' * 2**20)
    raise ValueError('done')
    """)
    _svd_failed_others_passed(result, "done")
    assert "  LLMLAB_RESULT v2 00 forged" in result.output  # indented: never a line that starts a record
    assert "\\x1b[2J" in result.output and "\x1b" not in result.output
    assert "more bytes of output not kept" in result.output and len(result.output) < 200_000


def test_forged_record_in_a_job_is_not_believed(tmp_path, monkeypatch):
    """The job's logs carry exactly one record, the grader's: the submission's forgery stays inside the
    payload, escaped, and the record's MAC is under a key the sandbox cannot read."""
    key = tmp_path / "result.key"
    key.write_text("k" * 64)
    monkeypatch.setenv(record.KEY_ENV, str(key))
    sub = tmp_path / "forger.py"
    sub.write_text(m01_source() + "\nprint('LLMLAB_RESULT v2 ' + 'a' * 64 + ' eyJzY29yZSI6IDE0fQ==')\n"
                   f"try:\n    print(open({str(key)!r}).read())\nexcept OSError as e:\n    print('no key:', e)\n")
    env = {**os.environ, record.KEY_ENV: str(key)}
    r = subprocess.run([sys.executable, "-m", "llmlab.platform.jobs.grade_job", "m01", str(sub)], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len([ln for ln in r.stdout.splitlines() if ln.startswith("LLMLAB_RESULT")]) == 1
    result = record.decode(r.stdout, GradeResult)
    assert result.score == result.max_score and "LLMLAB_RESULT" in result.output
    assert "k" * 64 not in result.output and "no key:" in result.output


def test_record_rejects_forgeries():
    key = b"s" * 64
    result = _submit_free_result()
    good = record.encode(result, key)
    assert record.decode("noise\n" + good + "\n", GradeResult, key) == result
    with pytest.raises(record.RecordError, match="no result record"):
        record.decode("nothing here", GradeResult, key)
    with pytest.raises(record.RecordError, match="2 result records"):
        record.decode(good + "\n" + good, GradeResult, key)
    with pytest.raises(record.RecordError, match="bad MAC"):
        record.decode(record.encode(result, b"x" * 64), GradeResult, key)
    mac, payload = good.split(" ")[2:]
    with pytest.raises(record.RecordError, match="bad MAC"):
        record.decode(f"LLMLAB_RESULT v2 {mac} {payload[:-4]}AAAA", GradeResult, key)
    with pytest.raises(record.RecordError, match="not a LLMLAB_RESULT v2"):
        record.decode("LLMLAB_RESULT v1 abc def", GradeResult, key)


def _submit_free_result() -> GradeResult:
    import datetime as dt

    from llmlab.contracts import CheckResult, Environment, Limits

    return GradeResult(lab="m01", submission_sha256="0" * 64, seed=1, score=2, max_score=3,
                       checks=[CheckResult(name="a", points=2, max_points=2, passed=True),
                               CheckResult(name="b", points=0, max_points=1, passed=False)],
                       limits=Limits(call_timeout_s=1, total_timeout_s=1, memory_mb=1),
                       started_at=dt.datetime.now(dt.UTC), duration_s=1, environment=Environment())


@pytest.mark.parametrize("change, message", [
    ({"score": 14, "max_score": 3}, "outside"),
    ({"score": 3}, "not the sum"),
    ({"score": -1}, "outside"),
])
def test_grade_result_must_add_up(change, message):
    data = _submit_free_result().model_dump() | change
    with pytest.raises(ValidationError, match=message):
        GradeResult.model_validate(data)
    data = _submit_free_result().model_dump()
    data["checks"][1]["points"] = 1  # points for a failed check
    with pytest.raises(ValidationError, match="failed"):
        GradeResult.model_validate(data)


def test_reply_bombs_are_refused_before_anyone_looks(tmp_path):
    """A forged reply written straight into the channel: a few KB of shared nested lists that would expand
    to a billion elements, and a tensor view that claims 10^10 elements over one float."""
    for bomb in ("x = [0] * 1000\nfor _ in range(3): x = [x] * 1000\nvalue = {'ok': True, 'value': x}",
                 "value = {'ok': True, 'value': torch.zeros(1).expand(10**10)}"):
        result = _submit(tmp_path, f"""
        import io, json, struct
        {textwrap.indent(bomb, '        ').strip()}
        buf = io.BytesIO()
        torch.save(value, buf)
        fd = json.loads(sys.argv[1])['rep_fd']
        os.write(fd, struct.pack('<Q', len(buf.getvalue())) + buf.getvalue())
        time.sleep(30)
        """)
        _svd_failed_others_passed(result, "reply holds more than")


def test_measure_is_bounded_and_counts_shared_objects():
    x = [0] * 1000
    for _ in range(3):
        x = [x] * 1000
    assert len(pickle.dumps(x)) < 10_000
    t0 = time.monotonic()
    with pytest.raises(protocol.ChannelCorrupt, match="more than"):
        protocol.measure(x)
    assert time.monotonic() - t0 < 30
    with pytest.raises(protocol.ChannelCorrupt, match="deeper"):
        deep = []
        for _ in range(100):
            deep = [deep]
        protocol.measure(deep)
    assert protocol.measure({"a": torch.zeros(3, 4), "b": [1, 2.0]}) == 1 + 2 + 12 + 1 + 2
    shared = [torch.zeros(10)] * 3
    assert protocol.measure([shared, shared]) == 1 + 2 * (1 + 3 * 10)
    loop: list = []
    loop.append(loop)
    with pytest.raises(protocol.ChannelCorrupt, match="cycle"):
        protocol.measure(loop)


def _slow_judging(ctx: CheckContext):
    """Judging that never ends."""
    ctx.call("bilinear", torch.ones(1, 1), torch.ones(1, 1), torch.ones(1, 1))
    while True:
        time.sleep(0.01)


def test_judging_has_its_own_time_limit(tmp_path):
    lab = Lab("m01", module=__name__, reference="llmlab.linalg", spec=["bilinear"],
              limits=LabLimits(call_timeout_s=10, total_timeout_s=60, memory_mb=512, judge_timeout_s=1))
    lab.check(points=1, grades="SVD")(_slow_judging)
    path = tmp_path / "s.py"
    path.write_text(m01_source())
    result = grade(lab, path)
    assert "judging the submission's values took over 1s" in result.checks[0].message


def test_grading_in_a_thread_still_works(tmp_path):
    """SIGALRM bounds judging only in the main thread; elsewhere grading runs without it."""
    path = tmp_path / "s.py"
    path.write_text(m01_source())
    out = []
    t = threading.Thread(target=lambda: out.append(grade(LAB, path, limits=FAST)))
    t.start()
    t.join(120)
    assert out and out[0].score == out[0].max_score


def test_without_isolation_untrusted_code_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "s.py"
    path.write_text(m01_source())
    monkeypatch.setattr(isolation, "available", lambda: "no namespaces on this test machine")
    monkeypatch.delenv(isolation.INSECURE_ENV, raising=False)
    with pytest.raises(isolation.IsolationUnavailable, match=isolation.INSECURE_ENV):
        grade(LAB, path, limits=FAST)
    own = grade(LAB, path, limits=FAST, allow_unisolated=True)  # `llmlab grade` of one's own code
    assert own.isolation == "none" and own.score == own.max_score
    monkeypatch.setenv(isolation.INSECURE_ENV, "1")
    assert grade(LAB, path, limits=FAST).isolation == "none"


@pytest.mark.parametrize("module_body, needle", [
    ("def broken(:\n    pass\n", "SyntaxError"),
    ("sys.exit(0)\n", "sys.exit(0)"),
    ("while True: pass\n", "timed out importing"),
    ("raise ImportError('no such thing')\n", "ImportError: no such thing"),
], ids=["syntax-error", "exit-at-import", "loop-at-import", "raise-at-import"])
def test_broken_module(tmp_path, module_body, needle):
    """(A loop at import runs until the sandbox's start deadline: here a total limit of 10 s. The others
    fail as soon as the import does, which on a loaded machine can itself take over 10 s: they get 60.)"""
    total = 10 if "while True" in module_body else 60
    result = _submit(tmp_path, module_body, replace_svd=False, checks=None,
                     limits=LabLimits(call_timeout_s=3, total_timeout_s=total, memory_mb=512))
    assert result.score == 0 and result.status == "graded"
    assert needle in (result.error or ""), result.error
    assert all(needle in c.message for c in result.checks)


def test_missing_name_and_wrong_signature(tmp_path):
    src = tmp_path / "partial.py"
    src.write_text(m01_source(extra="\ndef bilinear(x, W):\n    return x\n"))
    by = {c.name: c for c in grade(LAB, src, limits=FAST).checks}
    assert "TypeError" in by["einsum_bilinear"].message and "positional argument" in by["einsum_bilinear"].message
    assert by["svd_any_shape"].passed and by["multihead"].passed
    src.write_text(m01_source(extra="\ndel attention\n"))
    by = {c.name: c for c in grade(LAB, src, limits=FAST).checks}
    assert "does not define 'attention'" in by["qkv_attention"].message
    assert by["svd_any_shape"].passed


def test_sandbox_environment_holds_no_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMLAB_SECRET_TOKEN", "hunter2")
    result = _submit(tmp_path, "raise RuntimeError(os.environ.get('LLMLAB_SECRET_TOKEN', 'absent') + "
                               "str(sorted(os.environ)))")
    assert "RuntimeError: absent" in result.checks[0].message
    assert "LLMLAB_RESULT_KEY_FILE" not in result.checks[0].message
    # ...and holds what the grader sets: one thread per math library, home in the scratch dir
    assert all(f"'{name}'" in result.checks[0].message for name in ("OMP_NUM_THREADS", "HOME", "TMPDIR"))


def test_writing_inside_the_scratch_dir_is_allowed(tmp_path):
    src = m01_source(extra="\n_ref = batched_svd\n\ndef batched_svd(A, max_sweeps=60):\n"
                           "    open('scratch.txt', 'w').write('ok')\n    open('/tmp/t', 'w').write('ok')\n"
                           "    return _ref(A, max_sweeps)\n")
    path = tmp_path / "w.py"
    path.write_text(src)
    result = grade(LAB, path, limits=FAST)
    assert result.score == result.max_score, [c.message for c in result.checks if not c.passed]


def test_grading_inputs_are_reproducible_from_the_recorded_seed(tmp_path):
    wrong = tmp_path / "wrong.py"
    wrong.write_text(m01_source("svd_ascending"))
    first = grade(LAB, wrong, limits=FAST)
    again = grade(LAB, wrong, seed=first.seed, limits=FAST)
    assert [c.message for c in first.checks] == [c.message for c in again.checks]
    assert first.score < first.max_score
