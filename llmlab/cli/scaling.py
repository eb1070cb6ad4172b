"""Scaling laws: ``llmlab plan``, the compute-optimal model for a budget."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from llmlab.cli import Fail, app, out


@app.command("plan")
def plan_cmd(flops: Annotated[float | None, typer.Option("--flops", help="compute in FLOPs, e.g. 1e21")] = None,
             gpu_hours: Annotated[float | None, typer.Option("--gpu-hours", help="accelerator hours instead")] = None,
             gpu: Annotated[str, typer.Option(help="h200, h100, a100 (data-sheet bf16 peak) or cpu (measured)")]
             = "h200",
             mfu: Annotated[float, typer.Option(help="model FLOPs utilization for --gpu-hours")] = 0.4,
             vocab: Annotated[int, typer.Option(help="vocabulary size of the planned model")] = 32000,
             bootstrap: Annotated[int, typer.Option(min=2, help="refits for the loss interval (each ~50 ms)")]
             = 200,
             as_json: Annotated[bool, typer.Option("--json")] = False):
    """The compute-optimal N and D (Chinchilla's L(N, D) fitted on Hoffmann et al.'s published points), the
    loss to expect with a 95% bootstrap interval, and a model shape llmlab can train."""
    from llmlab.scaling.planner import plan

    try:
        p = plan(flops, hours=gpu_hours, device=gpu.lower(), mfu=mfu, vocab=vocab, n_boot=bootstrap)
    except ValueError as e:
        raise Fail(str(e), 2) from None
    if as_json:
        out.print_json(json.dumps(asdict(p)))
        return
    table = Table("", "", title=f"compute-optimal plan for C = {p.flops:.3g} FLOPs"
                  + (f" ({p.hours:g} h of {p.device} at {mfu:.0%} MFU)" if p.hours else ""))
    s = p.shape
    for k, v in (("parameters N", f"{p.N:.3g}"), ("tokens D", f"{p.D:.3g}"),
                 ("tokens per parameter", f"{p.tokens_per_param:.1f}"),
                 ("expected loss (nats/token)", f"{p.loss:.3f}  [{p.loss_interval[0]:.3f}, {p.loss_interval[1]:.3f}]"),
                 ("shape", f"{s['n_layers']} layers, d_model {s['d_model']}, {s['n_heads']} heads "
                           f"({s['params']:.3g} parameters with a {s['vocab_size']}-token vocabulary)"),
                 ("fit", ", ".join(f"{k} {v:.4g}" for k, v in p.fit.items()))):
        table.add_row(k, v)
    out.print(table)
