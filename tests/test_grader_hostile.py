"""Hostile and broken submissions: the grader reports each with a clear message and survives.

Each submission is the m01 reference with ``batched_svd`` (or the module body) replaced by something
hostile; the SVD checks must fail with the stated reason while the other checks still pass, which shows the
grader went on grading after the fault.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from llmlab.grading import grade
from llmlab.labs import get_lab
from llmlab.labs.base import LabLimits

LAB = get_lab("m01")
FAST = LabLimits(call_timeout_s=5, total_timeout_s=60, memory_mb=512)
SVD_CHECKS = {"svd_any_shape", "svd_hard_matrices"}


def _submit(tmp_path: Path, body: str, *, replace_svd: bool = True):
    src = "from llmlab.linalg import *  # noqa\nimport os, sys, subprocess\n"
    if replace_svd:
        src += "def batched_svd(A, max_sweeps=60):\n" + textwrap.indent(textwrap.dedent(body), "    ")
    else:
        src += textwrap.dedent(body)
    path = tmp_path / "sub" / "submission.py"
    path.parent.mkdir()
    path.write_text(src)
    return grade(LAB, path, seed=7, limits=FAST)


def _svd_failed_others_passed(result, needle: str):
    by = {c.name: c for c in result.checks}
    for name in SVD_CHECKS:
        assert not by[name].passed
        assert needle in by[name].message, by[name].message
    others = [c for c in result.checks if c.name not in SVD_CHECKS]
    assert all(c.passed for c in others), [(c.name, c.message) for c in others if not c.passed]
    assert result.status == "graded"


@pytest.mark.parametrize("body, needle", [
    ("raise ValueError('boom')", "ValueError: boom"),
    ("while True: pass", "timed out"),
    ("x = [bytearray(2**20) for _ in range(5000)]", "emory"),
    ("sys.exit(3)", "sys.exit(3)"),
    ("os._exit(0)", "process ended"),
    ("subprocess.run(['true'])", "starting processes is not allowed"),
    ("os.system('true')", "starting processes is not allowed"),
    ("os.fork()", "starting processes is not allowed"),
    ("for _ in range(100): print('x' * 2**20)", "output limit"),
    ("for _ in range(100): sys.stderr.write('x' * 2**20)", "output limit"),
    ("return open('/etc/hostname').read()", "outside the sandbox"),
    ("import llmlab.data as d; return open(d.data_dir() / 'MANIFEST.md').read()", "outside the sandbox"),
    ("return os.listdir('/')", "outside the sandbox"),
    ("os.kill(os.getppid(), 9)", "sending signals is not allowed"),
    ("import socket; socket.create_connection(('127.0.0.1', 8265))", "network access is not allowed"),
    ("import ctypes; ctypes.CDLL(None).exit(0)", "loading native code is not allowed"),
    ("import resource; resource.setrlimit(resource.RLIMIT_AS, (-1, -1))", "changing resource limits"),
    ("return None  # not a triple", "could not be judged"),
], ids=["exception", "infinite-loop", "memory-blowup", "sys-exit", "os-exit", "subprocess", "os-system", "fork",
        "stdout-flood", "stderr-flood", "read-outside", "read-shared-data", "list-root", "kill-grader", "network",
        "ctypes", "setrlimit", "wrong-type"])
def test_hostile_call(tmp_path, body, needle):
    _svd_failed_others_passed(_submit(tmp_path, body), needle)


def test_write_outside_sandbox_is_refused(tmp_path):
    target = tmp_path / "escaped.txt"
    result = _submit(tmp_path, f"open({str(target)!r}, 'w').write('pwned')")
    _svd_failed_others_passed(result, "outside the sandbox")
    assert not target.exists()


def test_writing_inside_the_sandbox_dir_is_allowed(tmp_path):
    result = _submit(tmp_path, "open('scratch.txt', 'w').write('ok')\nfrom llmlab.linalg import batched_svd as b\n"
                               "return b(A, max_sweeps)")
    assert result.score == result.max_score


def test_forged_reply_cannot_run_code_in_the_grader(tmp_path):
    """A submission writes a pickle that would run code on load into the reply channel: the grader reads
    replies with a restricted unpickler, so it reports a corrupt channel and nothing runs."""
    marker = tmp_path / "grader-was-owned"
    body = f"""
    import pickle, struct, builtins
    class Evil:
        def __reduce__(self):
            return (builtins.exec, ("open({str(marker)!r}, 'w').write('x')",))
    payload = pickle.dumps(Evil())
    for fd in range(3, 64):
        try:
            os.write(fd, struct.pack('<Q', len(payload)) + payload)
        except OSError:
            pass
    while True: pass
    """
    result = _submit(tmp_path, body)
    assert not marker.exists()
    assert all(not c.passed for c in result.checks if c.name in SVD_CHECKS)


@pytest.mark.parametrize("module_body, needle", [
    ("def broken(:\n    pass\n", "SyntaxError"),
    ("sys.exit(0)\n", "sys.exit(0)"),
    ("while True: pass\n", "timed out importing"),
    ("raise ImportError('no such thing')\n", "ImportError: no such thing"),
], ids=["syntax-error", "exit-at-import", "loop-at-import", "raise-at-import"])
def test_broken_module(tmp_path, module_body, needle):
    result = _submit(tmp_path, module_body, replace_svd=False)
    assert result.score == 0 and result.status == "graded"
    assert needle in (result.error or ""), result.error
    assert all(needle in c.message for c in result.checks)


def test_missing_name_and_wrong_signature(tmp_path):
    src = tmp_path / "partial.py"
    src.write_text("from llmlab.linalg import batched_svd, projector, low_rank_approx, discarded_norm, attention\n"
                   "def bilinear(x, W):\n    return x\n"
                   "from llmlab.linalg import multihead_attention\n")
    by = {c.name: c for c in grade(LAB, src, limits=FAST).checks}
    assert "TypeError" in by["einsum_bilinear"].message and "positional argument" in by["einsum_bilinear"].message
    assert by["svd_any_shape"].passed and by["multihead"].passed
    src.write_text("from llmlab.linalg import batched_svd\n")
    by = {c.name: c for c in grade(LAB, src, limits=FAST).checks}
    assert "does not define 'attention'" in by["qkv_attention"].message
    assert by["svd_any_shape"].passed


def test_sandbox_environment_holds_no_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMLAB_SECRET_TOKEN", "hunter2")
    result = _submit(tmp_path, "raise RuntimeError(os.environ.get('LLMLAB_SECRET_TOKEN', 'absent'))")
    assert "RuntimeError: absent" in result.checks[0].message


def test_grading_inputs_are_reproducible_from_the_recorded_seed(tmp_path):
    wrong = tmp_path / "wrong.py"
    wrong.write_text("from llmlab.linalg import *  # noqa\nfrom llmlab.labs.m01_linalg import "
                     "low_rank_off_by_one as low_rank_approx\n")
    first = grade(LAB, wrong, limits=FAST)
    again = grade(LAB, wrong, seed=first.seed, limits=FAST)
    assert [c.message for c in first.checks] == [c.message for c in again.checks]
