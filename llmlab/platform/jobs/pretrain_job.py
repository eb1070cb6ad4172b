"""Ray job entrypoint: pretrain with DeepSpeed ZeRO on Ray Train (``llmlab pretrain``, the chart's RayJob).

    python -m llmlab.platform.jobs.pretrain_job --config-json '{"zero_stage": 3, ...}' --out DIR

The settings are :class:`llmlab.distributed.pretrain.PretrainConfig`'s (unknown keys are an error). DIR must
be writable on the job's node (on a multi-node cluster: shared storage, since Ray Train writes its checkpoint
there). Prints a result record with the run's summary (loss history, tokens/s, the ZeRO stage table).
"""

from __future__ import annotations

import sys

from pydantic import BaseModel

from llmlab.platform.jobs import config_job


class PretrainRecord(BaseModel):
    out_dir: str
    summary: dict


def entrypoint(config: dict, out: str) -> str:
    """The shell command of the job, each argument quoted."""
    return config_job.command("llmlab.platform.jobs.pretrain_job", config, out)


def main(argv: list[str] | None = None) -> int:
    from llmlab.distributed.pretrain import PretrainConfig, pretrain
    from llmlab.platform.jobs import record

    config, out = config_job.parse("pretrain_job", argv)
    cfg = PretrainConfig.from_dict(config)
    summary = pretrain(cfg, out)
    print(record.encode(PretrainRecord(out_dir=str(out.resolve()), summary=summary)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
