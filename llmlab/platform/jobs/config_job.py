"""What the jobs that take a settings object share (``pretrain_job``, ``pipeline_job``, ``rlhf_job``): the
command line ``python -m MODULE --config-json '{...}' --out DIR [OPTIONS]``, quoted, and its parsing."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path


def command(module: str, config: dict, out: str, *options: str) -> str:
    """The job's shell command, each argument quoted; ``options`` are further arguments of the job's own."""
    return shlex.join(["python", "-m", module, "--config-json", json.dumps(config, separators=(",", ":")),
                       "--out", out, *options])


def parser(prog: str) -> argparse.ArgumentParser:
    """The common arguments; a job with options of its own adds them."""
    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("--config-json", required=True, help="the settings as a JSON object")
    p.add_argument("--out", type=Path, required=True)
    return p


def parse(prog: str, argv: list[str] | None) -> tuple[dict, Path]:
    """(settings, output folder) from the job's arguments."""
    args = parser(prog).parse_args(argv)
    return json.loads(args.config_json), args.out
