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
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil

from llmlab import __version__
from llmlab.contracts import CheckResult, Environment, GradeResult, Limits
from llmlab.grading import protocol
from llmlab.labs.base import CheckContext, CheckFailed, Lab, LabLimits

log = logging.getLogger(__name__)


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


class Sandbox:
    """One sandbox process holding the imported submission. Restarted after a crash or a timeout."""

    def __init__(self, lab: Lab, submission: Path, limits: LabLimits, workdir: Path):
        self.lab, self.submission, self.limits = lab, submission, limits
        self.dir = workdir
        self.proc: subprocess.Popen | None = None
        self.import_error: str | None = None

    def start(self, deadline: float) -> None:
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        cfg = {"req_fd": req_r, "rep_fd": rep_w, "sandbox_dir": str(self.dir), "submission": str(self.submission),
               "memory_mb": self.limits.memory_mb, "preload": [self.lab.module, *self.lab.preload]}
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.dir), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "OPENBLAS_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2", "PYTHONDONTWRITEBYTECODE": "1",
               "LANG": "C.UTF-8"}
        for keep in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
            if keep in os.environ:
                env[keep] = os.environ[keep]
        with open(self.dir / "stdout.txt", "ab") as out, open(self.dir / "stderr.txt", "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-m", "llmlab.grading.sandbox", json.dumps(cfg)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=self.dir, env=env,
                pass_fds=(req_r, rep_w), start_new_session=True,
            )
        os.close(req_r)
        os.close(rep_w)
        self.req_w, self.rep_r = req_w, rep_r
        try:
            hello = self._receive(deadline, what="importing the submission")
        except SubmissionError as e:  # a hang or crash at import fails every check; don't retry it
            self.import_error = str(e)
            raise
        if not hello.get("ok"):
            self.import_error = f"the submission failed to import: {hello.get('error')}"
            self.stop()
            raise SubmissionError(self.import_error)

    def _watch_memory(self) -> None:
        try:
            rss = psutil.Process(self.proc.pid).memory_info().rss
        except psutil.Error:
            return
        if rss > (self.limits.memory_mb + 1024) * 2**20:  # + the runtime's own baseline
            self.stop()
            raise SubmissionError(f"the submission used {rss / 2**20:.0f} MB, over the memory limit "
                                  f"of {self.limits.memory_mb} MB")

    def _receive(self, deadline: float, what: str) -> dict:
        try:
            reply = protocol.read_reply(self.rep_r, deadline, poll=self._watch_memory)
        except protocol.ChannelTimeout:
            self.stop()
            raise SubmissionError(f"timed out {what} (limit {self.limits.call_timeout_s:g}s per call, "
                                  f"{self.limits.total_timeout_s:g}s in all)") from None
        except protocol.ChannelClosed:
            code = self.stop()
            raise SubmissionError(f"the submission's process ended while {what} ({_describe_exit(code)})") from None
        except protocol.ChannelCorrupt as e:
            self.stop()
            raise SubmissionError(f"the submission corrupted the grader's channel: {e}") from None
        if not isinstance(reply, dict):
            self.stop()
            raise SubmissionError("the submission corrupted the grader's channel")
        return reply

    def call(self, probe: str, args: tuple, kwargs: dict, deadline: float) -> Any:
        try:
            protocol.send_request(self.req_w, (probe, args, kwargs))
        except OSError:
            code = self.stop()
            raise SubmissionError(f"the submission's process is gone ({_describe_exit(code)})") from None
        reply = self._receive(deadline, what=f"running {probe.rpartition(':')[2]}")
        if not reply.get("ok"):
            raise CheckFailed(str(reply.get("error")))
        return reply.get("value")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        code = self.proc.wait()
        for fd in (self.req_w, self.rep_r):
            try:
                os.close(fd)
            except OSError:
                pass
        self.proc = None
        return code


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        name = signal.Signals(-code).name
        return f"killed by {name}" + (" - likely out of memory" if name in ("SIGKILL", "SIGSEGV") else "")
    return f"exit code {code}"


def grade(lab: Lab, submission: Path, *, learner: str = "anonymous", seed: int | None = None,
          limits: LabLimits | None = None, progress=None) -> GradeResult:
    """Grade ``submission`` (a .py file or a folder) against ``lab``. Never raises for a bad submission:
    its faults are reported in the result. Raises FileNotFoundError/ValueError when grading cannot run."""
    submission = Path(submission).resolve()
    if not submission.exists():
        raise FileNotFoundError(f"no such submission: {submission}")
    if submission.is_file() and submission.suffix != ".py":
        raise ValueError(f"a submission is a .py file or a folder, not {submission.name}")
    limits = limits or lab.limits
    seed = secrets.randbits(63) if seed is None else seed
    started, t0 = dt.datetime.now(dt.UTC), time.monotonic()
    total_deadline = t0 + limits.total_timeout_s
    results: list[CheckResult] = []
    workdir = Path(tempfile.mkdtemp(prefix=f"llmlab-grade-{lab.id}-"))
    box = Sandbox(lab, submission, limits, workdir)
    fatal: str | None = None
    try:
        for index, check in enumerate(lab.checks):
            c0 = time.monotonic()
            if progress:
                progress(check.name)

            def caller(probe, args, kwargs):
                if box.proc is None:
                    box.start(min(time.monotonic() + limits.call_timeout_s * 2, total_deadline))
                return box.call(probe, args, kwargs, min(time.monotonic() + limits.call_timeout_s, total_deadline))

            passed, message = False, ""
            if fatal:
                message = fatal
            elif time.monotonic() > total_deadline:
                message = f"not run: the grading's total time limit ({limits.total_timeout_s:g}s) was reached"
            else:
                try:
                    check.fn(CheckContext(_check_seed(seed, index), caller))
                    passed = True
                except CheckFailed as e:
                    message = str(e)
                except SubmissionError as e:
                    message = str(e)
                    if box.import_error:
                        fatal = box.import_error
                except Exception as e:  # a value of the wrong type or shape that the judging code tripped on
                    message = f"the submission's result could not be judged: {type(e).__name__}: {e}"
            results.append(CheckResult(name=check.name, points=check.points if passed else 0.0,
                                       max_points=check.points, passed=passed, message=message[:2000],
                                       duration_s=round(time.monotonic() - c0, 4)))
    finally:
        box.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    import torch

    return GradeResult(
        lab=lab.id, learner=learner, submission_sha256=submission_sha256(submission), seed=seed,
        checks=results, score=sum(r.points for r in results), max_score=lab.max_score, error=fatal,
        limits=Limits(**vars(limits)), started_at=started, duration_s=round(time.monotonic() - t0, 3),
        environment=Environment(llmlab=__version__, torch=torch.__version__),
    )


def grade_source(lab: Lab, source: str, **kwargs) -> GradeResult:
    """Grade a submission given as Python source (used for the reference and the seeded bugs)."""
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
