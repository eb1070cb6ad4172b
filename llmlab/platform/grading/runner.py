"""The trusted side of grading: start the sandbox, run each check, judge, and build the result record."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil

from llmlab import __version__
from llmlab.contracts import CheckResult, Environment, GradeResult, Limits
from llmlab.labs.base import CheckContext, CheckFailed, Lab, LabLimits
from llmlab.platform.grading import isolation, protocol, scan

log = logging.getLogger(__name__)


# A sandbox's start (a fresh interpreter importing torch, the lab and the submission) may use this many CPU
# seconds whatever the per-call limit, and any wall time within the grading's total limit: on a loaded
# machine the imports alone wait for the CPU longer than that. A loop at import burns CPU and ends here; a
# sleep at import ends at the total limit.
START_S = 20.0


class SubmissionError(Exception):
    """The submission misbehaved in a way that ends the current call (crash, timeout, memory, import)."""


def submission_sha256(path: Path) -> str:
    """sha256 over a file, or over a folder's files in sorted order (names and contents)."""
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            h.update(str(f.relative_to(path)).encode() + b"\0" + f.read_bytes() + b"\0")
    else:
        h.update(path.read_bytes())
    return h.hexdigest()


OUTPUT_KEEP_BYTES = 16 * 1024  # of the submission's stdout/stderr, kept (escaped) for the learner


class _OutputTap:
    """Drains the sandbox's stdout/stderr pipe on a thread: keeps the first bytes, counts the rest. The
    submission's output never reaches the grader's own stdout (and so never a job's logs)."""

    def __init__(self, fd: int):
        self.fd, self.kept, self.total = fd, bytearray(), 0
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        while chunk := os.read(self.fd, 1 << 16):
            self.total += len(chunk)
            if len(self.kept) < OUTPUT_KEEP_BYTES:
                self.kept += chunk[: OUTPUT_KEEP_BYTES - len(self.kept)]
        os.close(self.fd)

    def text(self) -> str:
        self.thread.join(timeout=5)
        shown = escape_output(bytes(self.kept))
        if self.total > len(self.kept):
            shown += f"\n[... {self.total - len(self.kept)} more bytes of output not kept]"
        return shown


def escape_output(data: bytes) -> str:
    """Learner output made safe to show: every control character but newline and tab escaped, and each
    line indented, so it cannot forge a result record or move a terminal's cursor."""
    text = data.decode("utf-8", errors="backslashreplace")
    text = "".join(c if c in "\n\t" or (c.isprintable() and c not in "\x85\u2028\u2029")
                   else c.encode("unicode_escape").decode() for c in text)
    return "\n".join("  " + line for line in text.splitlines())


class Sandbox:
    """One sandbox process holding the imported submission. Restarted after a crash or a timeout.

    ``workdir`` holds ``scratch/`` (the only place the submission may write) and ``submission/`` (a copy of
    the submission, read-only inside, so it cannot change under the grader)."""

    def __init__(self, lab: Lab, submission: Path, limits: LabLimits, workdir: Path, *, isolated: bool,
                 trusted: bool = False):
        self.lab, self.limits, self.isolated, self.trusted = lab, limits, isolated, trusted
        self.scratch = workdir / "scratch"
        self.scratch.mkdir()
        self.staged = _stage(submission, workdir / "submission")
        self.proc: subprocess.Popen | None = None
        self.tap: _OutputTap | None = None
        self.output: list[str] = []
        self.import_error: str | None = None

    def start(self, deadline: float) -> None:
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        out_r, out_w = os.pipe()
        inside = (isolation.SCRATCH, f"{isolation.SUBMISSION}/{self.staged.name}") if self.isolated else (
            str(self.scratch), str(self.staged))
        cfg = {"req_fd": req_r, "rep_fd": rep_w, "scratch": inside[0], "submission": inside[1],
               "memory_mb": self.limits.memory_mb, "preload": list(self.lab.preload), "lab": self.lab.id,
               "forbidden": list(self.lab.forbidden), "isolated": self.isolated,
               "trusted": self.trusted,
               "max_processes": isolation.MAX_PROCESSES}
        env = {"PATH": "/usr/bin:/bin", "HOME": inside[0], "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "OPENBLAS_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2", "PYTHONDONTWRITEBYTECODE": "1",
               "LANG": "C.UTF-8", "TMPDIR": "/tmp" if self.isolated else inside[0]}
        for keep in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
            if keep in os.environ:
                env[keep] = os.environ[keep]
        agent_args = [json.dumps(cfg)]
        if self.isolated:
            isolation.prepare(self.scratch)
            cmd = isolation.command(agent_args, scratch=self.scratch, submission=self.staged.parent,
                                    expose_llmlab=self.trusted, env=env)
        else:
            cmd = [sys.executable, "-I", "-u", str(Path(__file__).with_name("sandbox.py")), *agent_args]
        cpu = int(self.limits.total_timeout_s) + 10
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out_w, stderr=out_w, cwd=self.scratch,
                                     env=env, pass_fds=(req_r, rep_w), start_new_session=True,
                                     preexec_fn=lambda: isolation.preexec_limits(cpu))
        for fd in (req_r, rep_w, out_w):
            os.close(fd)
        self.req_w, self.rep_r = req_w, rep_r
        self.tap = _OutputTap(out_r)
        try:
            hello = self._receive(deadline, what="importing the submission", cpu_budget=START_S)
        except SubmissionError as e:  # a hang or crash at import fails every check; don't retry it
            self.import_error = str(e)
            raise
        if not hello.get("ok"):
            self.import_error = f"the submission failed to import: {hello.get('error')}"
            self.stop()
            raise SubmissionError(self.import_error)

    def _watch_memory(self) -> None:
        try:  # the whole tree: the agent's resident memory, and what its children hold of their own (USS:
            # forked children share the agent's pages until they write to them)
            procs = [psutil.Process(self.proc.pid)]
            procs += procs[0].children(recursive=True)
            sizes = [p.memory_info().rss for p in procs]
            agent = sizes.index(max(sizes))
            rss = sizes[agent] + sum(p.memory_full_info().uss for i, p in enumerate(procs) if i != agent)
        except psutil.Error:
            return
        if rss > (self.limits.memory_mb + 1024) * 2**20:  # + the runtime's own baseline
            self.stop()
            raise SubmissionError(f"the submission used {rss / 2**20:.0f} MB, over the memory limit "
                                  f"of {self.limits.memory_mb} MB")

    def _watch_cpu(self, budget: float) -> None:
        """Stop the sandbox once its processes have used ``budget`` seconds of CPU."""
        try:
            procs = [psutil.Process(self.proc.pid)]
            procs += procs[0].children(recursive=True)
            used = sum(sum(p.cpu_times()[:2]) for p in procs)
        except psutil.Error:
            return
        if used > budget:
            self.stop()
            raise SubmissionError(f"timed out importing the submission (over {budget:g} s of CPU)")

    def _receive(self, deadline: float, what: str, cpu_budget: float | None = None) -> dict:
        def poll():
            self._watch_memory()
            if cpu_budget is not None:
                self._watch_cpu(cpu_budget)

        try:
            reply = protocol.read_reply(self.rep_r, deadline, poll=poll)
        except protocol.ChannelTimeout:
            self.stop()
            raise SubmissionError(f"timed out {what} (limit {self.limits.call_timeout_s:g}s per call, "
                                  f"{self.limits.total_timeout_s:g}s in all)") from None
        except protocol.ChannelClosed:
            code = self.stop(grace=1.0)
            last = self.output[-1].strip().splitlines()[-1:] if self.output and self.output[-1].strip() else []
            raise SubmissionError(f"the submission's process ended while {what} ({_describe_exit(code)})"
                                  + (f"; its last output: {last[0].strip()[:300]}" if last else "")) from None
        except protocol.ChannelCorrupt as e:
            self.stop()
            raise SubmissionError(f"the submission corrupted the grader's channel: {e}") from None
        if not isinstance(reply, dict):
            self.stop()
            raise SubmissionError("the submission corrupted the grader's channel")
        return reply

    def call(self, probe: str | Callable, args: tuple, kwargs: dict, deadline: float) -> Any:
        try:
            protocol.send_request(self.req_w, _pickle_request(probe, args, kwargs))
        except OSError:
            code = self.stop()
            raise SubmissionError(f"the submission's process is gone ({_describe_exit(code)})") from None
        name = probe if isinstance(probe, str) else probe.__name__
        reply = self._receive(deadline, what=f"running {name}")
        if not reply.get("ok"):
            raise CheckFailed(str(reply.get("error")))
        return reply.get("value")

    def stop(self, grace: float = 0.0) -> int | None:
        """Kill the sandbox (after ``grace`` seconds to exit by itself, when it is already ending)."""
        if self.proc is None:
            return None
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        try:  # the sandbox's session: with a PID namespace, bwrap's death takes every descendant with it
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        code = self.proc.wait()
        for fd in (self.req_w, self.rep_r):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.tap is not None:
            self.output.append(self.tap.text())
            self.tap = None
        self.proc = None
        return code


def _stage(submission: Path, into: Path) -> Path:
    """Copy the submission (world-readable: the sandbox's uid must read it) and return the copy's path."""
    into.mkdir(mode=0o755)
    if submission.is_dir():
        target = into / "pkg"
        shutil.copytree(submission, target, symlinks=False, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        target = into / submission.name
        shutil.copyfile(submission, target)
    for path in (target, *(target.rglob("*") if target.is_dir() else ())):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return target


_PICKLED_BY_VALUE = False


def _pickle_request(probe, args, kwargs) -> bytes:
    """The request for the sandbox. Probes travel by value (cloudpickle): llmlab is not importable there."""
    global _PICKLED_BY_VALUE
    import cloudpickle

    import llmlab

    if not _PICKLED_BY_VALUE:
        cloudpickle.register_pickle_by_value(llmlab)
        _PICKLED_BY_VALUE = True
    return cloudpickle.dumps((probe, args, kwargs), protocol=5)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        name = signal.Signals(-code).name
        return f"killed by {name}" + (" - likely out of memory" if name in ("SIGKILL", "SIGSEGV") else "")
    return f"exit code {code}"


class JudgingTimeout(Exception):
    """The grader's own judging of one check ran over its limit."""


def _on_alarm(signum, frame):
    raise JudgingTimeout()


def grade(lab: Lab, submission: Path, *, learner: str = "anonymous", seed: int | None = None,
          limits: LabLimits | None = None, progress=None, trusted: bool = False,
          allow_unisolated: bool = False, stop_at_first_failure: bool = False,
          in_process: bool = False, checks: Collection[str] | None = None) -> GradeResult:
    """Grade ``submission`` (a .py file or a folder) against ``lab``. Never raises for a bad submission:
    its faults are reported in the result. Raises FileNotFoundError/ValueError when grading cannot run, and
    IsolationUnavailable when no OS sandbox exists (see ``isolation``) unless ``allow_unisolated`` (one's
    own code, ``llmlab grade``) or ``trusted`` (llmlab's own reference and seeded bugs, which also see the
    llmlab package inside the sandbox). With ``stop_at_first_failure`` (``llmlab grade -x``), the checks
    after the first failed one are not run (and earn nothing): a quick answer while fixing one thing. With
    ``in_process`` (trusted code only) the submission runs in this process (see ``in_process.InProcessBox``). With
    ``checks`` (``llmlab grade --check NAME``) only the named checks run; the others earn nothing."""
    if in_process and not trusted:
        raise ValueError("only trusted code is graded in-process")
    if checks is not None and (unknown := set(checks) - {c.name for c in lab.checks}):
        raise ValueError(f"lab {lab.id} has no check {', '.join(sorted(unknown))}; its checks: "
                         f"{', '.join(c.name for c in lab.checks)}")
    submission = Path(submission).resolve()
    if not submission.exists():
        raise FileNotFoundError(f"no such submission: {submission}")
    if submission.is_file() and submission.suffix != ".py":
        raise ValueError(f"a submission is a .py file or a folder, not {submission.name}")
    isolated = not in_process and isolation.require(untrusted=not (trusted or allow_unisolated))
    limits = limits or lab.limits
    seed = secrets.randbits(63) if seed is None else seed
    started, t0 = dt.datetime.now(dt.UTC), time.monotonic()
    total_deadline = t0 + limits.total_timeout_s
    results: list[CheckResult] = []
    workdir = Path(tempfile.mkdtemp(prefix=f"llmlab-grade-{lab.id}-"))
    timed = threading.current_thread() is threading.main_thread()  # SIGALRM bounds judging in the main thread
    fatal: str | None = None
    box = None
    try:
        if in_process:
            from llmlab.platform.grading.in_process import InProcessBox

            box = InProcessBox(submission)
        else:
            box = Sandbox(lab, submission, limits, workdir, isolated=isolated, trusted=trusted)
        for index, check in enumerate(lab.checks):
            c0 = time.monotonic()
            if progress:
                progress(check.name)

            def caller(probe, args, kwargs):
                paused = signal.setitimer(signal.ITIMER_REAL, 0)[0] if timed else 0.0  # sandbox time is not judging
                try:
                    if box.proc is None:
                        # importing is bounded by CPU seconds (START_S), not by the clock: on a loaded
                        # machine starting the sandbox and importing torch can take longer than that
                        box.start(total_deadline)
                    return box.call(probe, args, kwargs, min(time.monotonic() + limits.call_timeout_s,
                                                             total_deadline))
                finally:
                    if paused:
                        signal.setitimer(signal.ITIMER_REAL, paused)

            passed, message = False, ""
            if checks is not None and check.name not in checks:
                message = "not run: not among the checks asked for"
            elif fatal:
                message = fatal
            elif stop_at_first_failure and any(not r.passed for r in results):
                message = "not run: grading stopped at the first failed check"
            elif time.monotonic() > total_deadline:
                message = f"not run: the grading's total time limit ({limits.total_timeout_s:g}s) was reached"
            else:
                previous = signal.signal(signal.SIGALRM, _on_alarm) if timed else None
                try:
                    if timed:
                        signal.setitimer(signal.ITIMER_REAL, limits.judge_timeout_s)
                    check.fn(CheckContext(_check_seed(seed, index), caller))
                    passed = True
                except CheckFailed as e:
                    message = str(e)
                except SubmissionError as e:
                    message = str(e)
                    if box.import_error:
                        fatal = box.import_error
                except JudgingTimeout:
                    message = (f"judging the submission's values took over {limits.judge_timeout_s:g}s "
                               f"(values of an unreasonable size or shape?)")
                except Exception as e:  # a value of the wrong type or shape that the judging code tripped on
                    message = f"the submission's result could not be judged: {type(e).__name__}: {e}"
                finally:
                    if timed:
                        signal.setitimer(signal.ITIMER_REAL, 0)
                        signal.signal(signal.SIGALRM, previous)
            results.append(CheckResult(name=check.name, points=check.points if passed else 0.0,
                                       max_points=check.points, passed=passed, message=message[:2000],
                                       duration_s=round(time.monotonic() - c0, 4)))
    finally:
        if box is not None:
            box.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    import torch

    return GradeResult(
        lab=lab.id, learner=learner, submission_sha256=submission_sha256(submission), seed=seed,
        checks=results, score=sum(r.points for r in results), max_score=lab.max_score, error=fatal,
        limits=Limits(**vars(limits)), started_at=started, duration_s=round(time.monotonic() - t0, 3),
        environment=Environment(llmlab=__version__, torch=torch.__version__),
        isolation="bubblewrap" if isolated else "none", output="\n".join(o for o in box.output if o)[:64_000],
        findings=[] if trusted else scan.scan(submission, lab.forbidden),
    )


def grade_source(lab: Lab, source: str, **kwargs) -> GradeResult:
    """Grade a submission given as Python source (``trusted=True`` for llmlab's reference and seeded bugs)."""
    with tempfile.TemporaryDirectory(prefix="llmlab-src-") as d:
        path = Path(d) / "submission.py"
        path.write_text(source)
        return grade(lab, path, **kwargs)


def _check_seed(seed: int, index: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{index}".encode()).digest()[:8], "little") >> 1


def with_limits(base: LabLimits, *, timeout: float | None = None, memory_mb: int | None = None) -> LabLimits:
    out = base
    if timeout is not None:
        out = replace(out, total_timeout_s=timeout, call_timeout_s=min(out.call_timeout_s, timeout))
    if memory_mb is not None:
        out = replace(out, memory_mb=memory_mb)
    return out
