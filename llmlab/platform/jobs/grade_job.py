"""Ray job entrypoint: grade one submission and print the result record.

    python -m llmlab.platform.jobs.grade_job LAB PATH [--learner NAME] [--seed N]
    python -m llmlab.platform.jobs.grade_job LAB --reference        (llmlab's own reference, as `make run` does)

(``ray-jobs/grade.py`` is the same entrypoint for plain ``ray job submit``.) Exit 0 when grading happened,
whatever the score; 2 when it could not run (unknown lab, missing submission, no OS sandbox on this node).
A learner's code is never graded without the OS sandbox here unless the node sets
LLMLAB_INSECURE_NO_SANDBOX=1; the reference is llmlab's own code and runs either way.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def entrypoint(lab: str, path: str | None = None, *, learner: str = "anonymous", seed: int | None = None,
               reference: bool = False) -> str:
    """The one command line that grades in a Ray job (the client, the course run and the operator's
    RayJobs all use it), quoted for the shell Ray runs it in: a learner's name is never shell syntax."""
    args = ["python", "-m", "llmlab.platform.jobs.grade_job", lab, *(["--reference"] if reference else [path]),
            "--learner", learner]
    return shlex.join(args + (["--seed", str(seed)] if seed is not None else []))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="grade_job", description=__doc__.splitlines()[0])
    p.add_argument("lab")
    p.add_argument("path", type=Path, nargs="?")
    p.add_argument("--reference", action="store_true", help="grade llmlab's own reference (no PATH)")
    p.add_argument("--learner", default="anonymous")
    p.add_argument("--seed", type=int)
    args = p.parse_args(argv)
    if (args.path is None) == (not args.reference):
        p.error("give either PATH or --reference")

    from llmlab.labs import LabNotBuilt, UnknownLab, get_lab
    from llmlab.platform.grading import grade, grade_source
    from llmlab.platform.grading.isolation import IsolationUnavailable
    from llmlab.platform.jobs import record

    progress = lambda name: print(f"check {name}", flush=True)  # noqa: E731
    try:
        lab = get_lab(args.lab)
        if args.reference:
            result = grade_source(lab, lab.submission_source(), learner=args.learner, seed=args.seed,
                                  trusted=True, progress=progress)
        else:
            result = grade(lab, args.path, learner=args.learner, seed=args.seed, progress=progress)
    except (UnknownLab, LabNotBuilt, FileNotFoundError, ValueError, IsolationUnavailable) as e:
        print(f"grading could not run: {e}", file=sys.stderr)
        return 2
    print(f"{lab.id}: {result.score:g}/{result.max_score:g}", flush=True)
    print(record.encode(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
