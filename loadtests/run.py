"""`make loadtest`: the grading service's load test, headless, against the local stack (`llmlab up`).

Creates one load-test learner per simulated user, runs Locust on loopback for a bounded time with bounded
users, and saves CSV and HTML reports under loadtests/results/. Exits non-zero when an SLO is missed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="http://127.0.0.1:8000")
    p.add_argument("--users", type=int, default=5)
    p.add_argument("--duration", default="30s")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--db", help="the grading service's database URL (to create the load-test learners)")
    args = p.parse_args(argv)
    if not args.host.startswith(("http://127.", "http://localhost", "http://[::1]")):
        p.error("load tests send traffic to loopback only")
    cli = str(Path(sys.executable).with_name("llmlab"))
    db = ["--db", args.db] if args.db else []
    run_id = uuid.uuid4().hex[:6]
    tokens = [subprocess.run([cli, "learners", "add", f"loadtest-{run_id}-{i}", *db], capture_output=True, text=True,
                             check=True).stdout.strip() for i in range(args.users)]
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LLMLAB_LOADTEST_TOKENS": ",".join(tokens)}
    cmd = [str(Path(sys.executable).with_name("locust")), "-f", str(HERE / "grader_locustfile.py"), "--headless",
           "-u", str(args.users), "-r", str(args.users), "-t", args.duration, "--host", args.host,
           "--csv", str(args.out / "grader"), "--html", str(args.out / "grader.html"), "--only-summary"]
    return subprocess.run(cmd, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
