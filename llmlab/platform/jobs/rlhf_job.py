"""Ray job entrypoint: lab m13's RLHF run (``llmlab rlhf``), PPO's rollout workers, reward model and
learner as Ray actors on the job's cluster.

    python -m llmlab.platform.jobs.rlhf_job --config-json '{"iterations": 30}' --out DIR

The settings are :class:`llmlab.rlhf.train.RLHFConfig`'s (unknown keys are an error). Writes the history,
summary, KL tracker plot and PPO policy into DIR and prints a result record with the summary.
"""

from __future__ import annotations

import sys

from pydantic import BaseModel

from llmlab.platform.jobs import config_job


class RLHFRecord(BaseModel):
    out_dir: str
    summary: dict


def entrypoint(config: dict, out: str) -> str:
    """The shell command of the job, each argument quoted."""
    return config_job.command("llmlab.platform.jobs.rlhf_job", config, out)


def main(argv: list[str] | None = None) -> int:
    from llmlab.platform.jobs import record
    from llmlab.rlhf.run import run
    from llmlab.rlhf.train import RLHFConfig

    config, out = config_job.parse("rlhf_job", argv)
    summary = run(RLHFConfig.from_dict(config), out, on_ray=True)
    print(record.encode(RLHFRecord(out_dir=str(out.resolve()), summary=summary)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
