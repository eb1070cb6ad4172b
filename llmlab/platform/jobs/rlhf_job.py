"""Ray job entrypoint: lab m13's RLHF run (``llmlab rlhf``), PPO's rollout workers, reward model and
learner as Ray actors on the job's cluster.

    python -m llmlab.platform.jobs.rlhf_job --config-json '{"iterations": 30}' --out DIR [--metrics-port 9400]

The settings are :class:`llmlab.rlhf.train.RLHFConfig`'s (unknown keys are an error). Writes the history,
summary, KL tracker plot and PPO policy into DIR and prints a result record with the summary.
"""

from __future__ import annotations

import json
import sys

from pydantic import BaseModel

from llmlab.platform.jobs import config_job


class RLHFRecord(BaseModel):
    out_dir: str
    summary: dict


def entrypoint(config: dict, out: str, metrics_port: int | None = None, metrics_addr: str = "127.0.0.1") -> str:
    """The shell command of the job, each argument quoted. With ``metrics_port`` the job serves the KL
    tracker's gauges (``llmlab.platform.metrics.RLHF``) at http://ADDR:PORT/metrics while it runs."""
    extra = ("--metrics-port", str(metrics_port), "--metrics-addr", metrics_addr) if metrics_port else ()
    return config_job.command("llmlab.platform.jobs.rlhf_job", config, out, *extra)


def main(argv: list[str] | None = None) -> int:
    from prometheus_client import CollectorRegistry, start_http_server

    from llmlab.platform.jobs import record
    from llmlab.platform.metrics import RLHFMetrics
    from llmlab.rlhf.run import run
    from llmlab.rlhf.train import RLHFConfig

    p = config_job.parser("rlhf_job")
    p.add_argument("--metrics-port", type=int, help="serve the KL tracker's Prometheus gauges on this port")
    p.add_argument("--metrics-addr", default="127.0.0.1", help="the address to serve them on (0.0.0.0 in a pod)")
    args = p.parse_args(argv)
    cfg = RLHFConfig.from_dict(json.loads(args.config_json))
    on_row = None
    if args.metrics_port:
        registry = CollectorRegistry()
        tracker = RLHFMetrics(registry, run=args.out.name, kl_target=cfg.kl_target)
        start_http_server(args.metrics_port, addr=args.metrics_addr, registry=registry)
        on_row = tracker.observe
    summary = run(cfg, args.out, on_ray=True, on_row=on_row)
    print(record.encode(RLHFRecord(out_dir=str(args.out.resolve()), summary=summary)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
