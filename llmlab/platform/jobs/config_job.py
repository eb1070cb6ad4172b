"""What the jobs that take a settings object share (``pretrain_job``, ``pipeline_job``, ``rlhf_job``): the
command line ``python -m MODULE --config-json '{...}' --out DIR``, quoted, and its parsing."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path


def command(module: str, config: dict, out: str) -> str:
    """The job's shell command, each argument quoted."""
    return shlex.join(["python", "-m", module, "--config-json", json.dumps(config, separators=(",", ":")),
                       "--out", out])


def parse(prog: str, argv: list[str] | None) -> tuple[dict, Path]:
    """(settings, output folder) from the job's arguments."""
    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("--config-json", required=True, help="the settings as a JSON object")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    return json.loads(args.config_json), args.out
