"""Ray job entrypoint: the m17 data pipeline on Ray Data (``llmlab pipeline``).

    python -m llmlab.platform.jobs.pipeline_job --config-json '{"sources": ["https://..."]}' --out DIR

The settings are :class:`llmlab.pipeline.run.PipelineConfig`'s (unknown keys are an error). DIR must be
writable on the job's node; the token shards, ``index.json``, the tokenizer and the report land there.
Prints a result record with the per-stage report.
"""

from __future__ import annotations

import sys

from pydantic import BaseModel

from llmlab.platform.jobs import config_job


class PipelineRecord(BaseModel):
    out_dir: str
    report: dict


def entrypoint(config: dict, out: str) -> str:
    """The shell command of the job, each argument quoted."""
    return config_job.command("llmlab.platform.jobs.pipeline_job", config, out)


def main(argv: list[str] | None = None) -> int:
    from llmlab.pipeline.run import PipelineConfig, run
    from llmlab.platform.jobs import record

    config, out = config_job.parse("pipeline_job", argv)
    cfg = PipelineConfig.from_dict(config)
    report = run(cfg, out)
    print(record.encode(PipelineRecord(out_dir=str(out.resolve()), report=report)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
