"""The syllabus's ~70M-parameter model pretrained in bf16 with DeepSpeed on one GPU, as a Ray Train job:
tokens/s and MFU (against the GPU's data-sheet bf16 peak), and the bytes per parameter held at ZeRO stages 0
and 3. One short run on a GPU node (a local Ray instance is started when RAY_ADDRESS names none):

    python benchmarks/pretrain_device.py --steps 60 --gpu h200
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile

from llmlab.distributed import pretrain
from llmlab.scaling.planner import PEAK_FLOPS


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--gpu", default="h200", choices=sorted(PEAK_FLOPS))
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--zero-stage", type=int, default=3)
    args = p.parse_args()
    cfg = dataclasses.replace(pretrain.FULL, steps=args.steps, workers=args.workers, zero_stage=args.zero_stage,
                              eval_every=args.steps, eval_batches=2, sweep_steps=5, cpus_per_worker=4)
    with tempfile.TemporaryDirectory() as d:
        s = pretrain.pretrain(cfg, d)
    peak = PEAK_FLOPS[args.gpu] * cfg.workers * cfg.gpus_per_worker
    h = s["history"]
    out = {"params": s["params"], "workers": cfg.workers, "zero_stage": cfg.zero_stage, "steps": cfg.steps,
           "tokens_per_s": s["tokens_per_s"], "mfu": s["tokens_per_s"] * s["flops_per_token"] / peak,
           "val_loss": [h[0]["val_loss"], h[-1]["val_loss"]], "seconds": s["seconds"],
           "stage_sweep": [{k: r[k] for k in ("stage", "tokens_per_s")} | {
               "bytes_per_param_after_backward": r["bytes_after_backward"] / r["params"],
               "formula_bytes_per_param": r["formula_bytes"] / r["params"]} for r in s["stage_sweep"]]}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
