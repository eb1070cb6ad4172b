"""Ray job entrypoint: pretrain with DeepSpeed ZeRO on Ray Train (``llmlab pretrain``, the chart's RayJob).

    python -m llmlab.platform.jobs.pretrain_job --config-json '{"zero_stage": 3, ...}' --out DIR

The settings are :class:`llmlab.distributed.pretrain.PretrainConfig`'s (unknown keys are an error). DIR must
be writable on the job's node (on a multi-node cluster: shared storage, since Ray Train writes its checkpoint
there). Prints a result record with the run's summary (loss history, tokens/s, the ZeRO stage table).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import BaseModel


class PretrainRecord(BaseModel):
    out_dir: str
    summary: dict


def entrypoint(config: dict, out: str) -> str:
    """The shell command of the job, each argument quoted."""
    import shlex

    return shlex.join(["python", "-m", "llmlab.platform.jobs.pretrain_job", "--config-json",
                       json.dumps(config, separators=(",", ":")), "--out", out])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pretrain_job")
    p.add_argument("--config-json", required=True, help="PretrainConfig settings as a JSON object")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)

    from llmlab.distributed.pretrain import PretrainConfig, pretrain
    from llmlab.platform.jobs import record

    cfg = PretrainConfig.from_dict(json.loads(args.config_json))
    summary = pretrain(cfg, args.out)
    print(record.encode(PretrainRecord(out_dir=str(args.out.resolve()), summary=summary)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
