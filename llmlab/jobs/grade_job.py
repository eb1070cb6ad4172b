"""Ray job entrypoint: grade one submission and print the result record.

    python -m llmlab.jobs.grade_job LAB PATH [--learner NAME] [--seed N]

(``ray-jobs/grade.py`` is the same entrypoint for plain ``ray job submit``.) Exit 0 when grading happened,
whatever the score; 2 when it could not run (unknown lab, missing submission).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="grade_job", description=__doc__.splitlines()[0])
    p.add_argument("lab")
    p.add_argument("path", type=Path)
    p.add_argument("--learner", default="anonymous")
    p.add_argument("--seed", type=int)
    args = p.parse_args(argv)

    from llmlab.grading import grade
    from llmlab.jobs import record
    from llmlab.labs import LabNotBuilt, UnknownLab, get_lab

    try:
        lab = get_lab(args.lab)
        result = grade(lab, args.path, learner=args.learner, seed=args.seed,
                       progress=lambda name: print(f"check {name}", flush=True))
    except (UnknownLab, LabNotBuilt, FileNotFoundError, ValueError) as e:
        print(f"grading could not run: {e}", file=sys.stderr)
        return 2
    print(f"{lab.id}: {result.score:g}/{result.max_score:g}", flush=True)
    print(record.encode(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
