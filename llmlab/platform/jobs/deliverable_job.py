"""Ray job entrypoint: run one lab's reference deliverable into an output folder.

    python -m llmlab.platform.jobs.deliverable_job LAB --profile quick --out DIR

DIR must be a path the job's node can write and the submitter can read (the local head: the same disk).
Prints a result record with the deliverable's metrics.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import BaseModel


class DeliverableRecord(BaseModel):
    lab: str
    profile: str
    out_dir: str
    metrics: dict


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="deliverable_job")
    p.add_argument("lab")
    p.add_argument("--profile", default="quick")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)

    from llmlab.labs import run_deliverable
    from llmlab.platform.jobs import record

    result = run_deliverable(args.lab, args.profile, args.out)
    print(record.encode(DeliverableRecord(lab=args.lab, profile=args.profile, out_dir=str(args.out),
                                          metrics=result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
