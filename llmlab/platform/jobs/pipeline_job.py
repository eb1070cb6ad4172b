"""Ray job entrypoint: the m17 data pipeline on Ray Data (``llmlab pipeline``).

    python -m llmlab.platform.jobs.pipeline_job --config-json '{"sources": ["https://..."]}' --out DIR

The settings are :class:`llmlab.pipeline.run.PipelineConfig`'s (unknown keys are an error). DIR must be
writable on the job's node; the token shards, ``index.json``, the tokenizer and the report land there.
Prints a result record with the per-stage report.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from pydantic import BaseModel


class PipelineRecord(BaseModel):
    out_dir: str
    report: dict


def entrypoint(config: dict, out: str) -> str:
    """The shell command of the job, each argument quoted."""
    return shlex.join(["python", "-m", "llmlab.platform.jobs.pipeline_job", "--config-json",
                       json.dumps(config, separators=(",", ":")), "--out", out])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pipeline_job")
    p.add_argument("--config-json", required=True, help="PipelineConfig settings as a JSON object")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)

    from llmlab.pipeline.run import PipelineConfig, run
    from llmlab.platform.jobs import record

    report = run(PipelineConfig.from_dict(json.loads(args.config_json)), args.out)
    print(record.encode(PipelineRecord(out_dir=str(args.out.resolve()), report=report)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
