"""Time to a grading result for lab m01: `llmlab submit` through a warm local Ray head against
`llmlab grade` run directly. Both are the installed CLI, run as a user runs them; medians over 5 runs.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llmlab.labs import get_lab
from llmlab.platform.jobs import local


def _time(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return time.perf_counter() - t0


def main(runs: int = 5) -> dict:
    cli = str(Path(sys.executable).with_name("llmlab"))
    started_head = not local.is_up(local.default_address())
    address = local.ensure(None)
    with tempfile.TemporaryDirectory() as d:
        sub = Path(d) / "m01.py"
        sub.write_text(get_lab("m01").standalone_source())
        env = {**os.environ, "LLMLAB_GRADEBOOK": str(Path(d) / "bench.sqlite")}
        _time([cli, "submit", "m01", str(sub), "--json"], env)  # warm the head (runtime env, workers)
        direct = [_time([cli, "grade", "m01", str(sub), "--json"], env) for _ in range(runs)]
        ray = [_time([cli, "submit", "m01", str(sub), "--json", "--address", address], env) for _ in range(runs)]
    if started_head:
        local.stop_head()
    return {"benchmark": "submit_latency", "runs": runs, "grade_median_s": statistics.median(direct),
            "submit_median_s": statistics.median(ray), "ratio": statistics.median(ray) / statistics.median(direct),
            "grade_s": direct, "submit_s": ray}


if __name__ == "__main__":
    r = main()
    print(f"llmlab grade  median {r['grade_median_s']:.2f}s\nllmlab submit median {r['submit_median_s']:.2f}s "
          f"(warm Ray head)\nratio {r['ratio']:.2f}x")
