"""The cost of OS isolation per grading: m01's reference (self-contained, as a learner hands it in) graded
under bubblewrap against the same grading in a plain child process (what the grader did before: a Python
audit hook, no namespaces). Pairs alternate so that drift in the machine's speed hits both sides; medians.

Three figures: a whole grading (7 checks, one sandbox); the sandbox's start alone (spawn, import torch,
import the submission, first reply), which is where isolation costs anything; and the bare wall (bwrap's
namespaces and mounts, and setpriv, around /bin/true), which is that cost without the noise of a Python
start. Goal: under +300 ms a grading.
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from llmlab.labs import get_lab
from llmlab.platform.grading import isolation, runner


def _plain():
    """Grade without the OS sandbox: the fallback path (only ever for one's own code)."""
    return lambda: "benchmark baseline: no OS isolation"


def _grade(lab, path: Path, isolated: bool) -> float:
    saved = isolation.available
    if not isolated:
        isolation.available = _plain()
    try:
        t0 = time.perf_counter()
        result = runner.grade(lab, path, seed=0, allow_unisolated=not isolated)
        seconds = time.perf_counter() - t0
    finally:
        isolation.available = saved
    assert result.score == result.max_score and result.isolation == ("bubblewrap" if isolated else "none")
    return seconds


def _start(lab, path: Path, isolated: bool) -> float:
    with tempfile.TemporaryDirectory() as d:
        box = runner.Sandbox(lab, path, lab.limits, Path(d), isolated=isolated)
        t0 = time.perf_counter()
        box.start(time.monotonic() + 60)
        seconds = time.perf_counter() - t0
        box.stop()
    return seconds


def _bare(isolated: bool, scratch: Path, submission: Path) -> float:
    cmd = isolation.command(["-"], scratch=scratch, submission=submission)
    cmd = cmd[:cmd.index("--", cmd.index("/usr/bin/setpriv") if "/usr/bin/setpriv" in cmd else 0) + 1]
    t0 = time.perf_counter()
    subprocess.run([*cmd, "/bin/true"] if isolated else ["/bin/true"], check=True)
    return time.perf_counter() - t0


def main(pairs: int = 7) -> dict:
    if isolation.available() is not None:
        raise RuntimeError(f"no OS sandbox here: {isolation.available()}")
    lab = get_lab("m01")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m01.py"
        path.write_text(lab.standalone_source())
        _grade(lab, path, True), _grade(lab, path, False)  # warm the page cache and bwrap's first run
        scratch, sub = Path(d) / "scratch", Path(d) / "sub"
        scratch.mkdir(), sub.mkdir()
        isolation.prepare(scratch)
        rows = {"grade": {True: [], False: []}, "start": {True: [], False: []}, "bare": {True: [], False: []}}
        for i in range(pairs):
            for isolated in ((True, False) if i % 2 == 0 else (False, True)):
                rows["grade"][isolated].append(_grade(lab, path, isolated))
                rows["start"][isolated].append(_start(lab, path, isolated))
                rows["bare"][isolated] += [_bare(isolated, scratch, sub) for _ in range(5)]
    out = {"benchmark": "isolation", "pairs": pairs}
    for what, r in rows.items():
        iso, plain = statistics.median(r[True]), statistics.median(r[False])
        paired = statistics.median(a - b for a, b in zip(r[True], r[False], strict=True))
        out[what] = {"bubblewrap_s": round(iso, 4), "plain_s": round(plain, 4), "ratio": round(iso / plain, 3),
                     "overhead_ms": round(1e3 * (iso - plain)), "paired_overhead_ms": round(1e3 * paired)}
    out["goal_met"] = out["grade"]["paired_overhead_ms"] < 300
    return out


def report(r: dict) -> None:
    print(f"grading isolation (m01 reference, medians of {r['pairs']} alternating pairs)")
    for what, label in (("grade", "whole grading"), ("start", "sandbox start"), ("bare", "bare wall")):
        x = r[what]
        print(f"  {label:<14} bubblewrap {x['bubblewrap_s']:.4f}s  plain {x['plain_s']:.4f}s  ratio {x['ratio']:.2f}x  "
              f"overhead {x['paired_overhead_ms']:+d} ms (paired)")
    print(f"  goal (< +300 ms a grading): {'met' if r['goal_met'] else 'NOT met'}")


if __name__ == "__main__":
    report(main())
