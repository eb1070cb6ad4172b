"""`make loadtest`: a service's load test, headless, against the local stack (`llmlab up`).

    python loadtests/run.py --service grader      # submit / poll / gradebook (default)
    python loadtests/run.py --service inference --host http://127.0.0.1:8001   # streamed chat completions
    python loadtests/run.py --service retrieval --host http://127.0.0.1:8002   # searches and embeddings

For the grader, creates one load-test learner per simulated user. Runs Locust on loopback for a bounded time
with bounded users, and saves CSV and HTML reports under loadtests/results/. Exits non-zero when an SLO of
loadtests/slos.yaml is missed.
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
    p.add_argument("--service", choices=("grader", "inference", "retrieval"), default="grader")
    p.add_argument("--host", help="default: the service's `llmlab up` address (grader :8000, inference :8001, "
                   "retrieval :8002)")
    p.add_argument("--users", type=int, default=5)
    p.add_argument("--duration", default="30s")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--db", help="the grading service's database URL (to create the load-test learners)")
    args = p.parse_args(argv)
    args.host = args.host or f"http://127.0.0.1:{ {'grader': 8000, 'inference': 8001, 'retrieval': 8002}[args.service]}"
    if not args.host.startswith(("http://127.", "http://localhost", "http://[::1]")):
        p.error("load tests send traffic to loopback only")
    env = dict(os.environ)
    if args.service == "grader":
        cli = str(Path(sys.executable).with_name("llmlab"))
        db = ["--db", args.db] if args.db else []
        run_id = uuid.uuid4().hex[:6]
        tokens = [subprocess.run([cli, "learners", "add", f"loadtest-{run_id}-{i}", *db], capture_output=True,
                                 text=True, check=True).stdout.strip() for i in range(args.users)]
        env["LLMLAB_LOADTEST_TOKENS"] = ",".join(tokens)
    args.out.mkdir(parents=True, exist_ok=True)
    name = args.service
    cmd = [str(Path(sys.executable).with_name("locust")), "-f", str(HERE / f"{name}_locustfile.py"), "--headless",
           "-u", str(args.users), "-r", str(args.users), "-t", args.duration, "--host", args.host,
           "--csv", str(args.out / name), "--html", str(args.out / f"{name}.html"), "--only-summary",
           # requests still in flight when the run time ends finish and are counted: the slowest requests
           # must not drop out of the percentiles the SLO gate judges
           "--stop-timeout", "120"]
    return subprocess.run(cmd, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
