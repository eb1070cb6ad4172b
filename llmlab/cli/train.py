"""Training at scale: ``llmlab pretrain``, DeepSpeed ZeRO on Ray Train, submitted as a Ray job."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from llmlab.cli import AddressOpt, Fail, app, err, out


@app.command("pretrain")
def pretrain_cmd(config: Annotated[str, typer.Argument(help="a .toml/.yaml/.json file of PretrainConfig settings, or "
                                                            "a preset: quick (2 CPU workers), full (~70M, 1 GPU)")],
                 address: AddressOpt = None,
                 out_dir: Annotated[Path | None, typer.Option("--out", help="where the model and summary go (on the "
                                                              "cluster's disk; default runs/pretrain-<time>)")] = None,
                 timeout: Annotated[float, typer.Option(help="seconds to wait for the job")] = 6 * 3600,
                 no_wait: Annotated[bool, typer.Option("--no-wait", help="submit and print the job id")] = False):
    """Pretrain a Llama-style LM with DeepSpeed ZeRO (bf16, activation checkpointing) as a Ray Train job on a
    local head or any Ray cluster; prints the loss, tokens/s and the per-stage memory table."""
    from llmlab.distributed import pretrain
    from llmlab.platform.jobs import client, local, record
    from llmlab.platform.jobs.pretrain_job import PretrainRecord, entrypoint

    presets = {"quick": pretrain.QUICK, "full": pretrain.FULL}
    try:
        cfg = presets[config] if config in presets else pretrain.PretrainConfig.from_file(config)
    except FileNotFoundError:
        raise Fail(f"no such config file: {config} (or use a preset: {', '.join(presets)})", 2) from None
    except (ValueError, TypeError) as e:
        raise Fail(f"{config}: {e}", 2) from None
    out_dir = (out_dir or Path("runs") / f"pretrain-{dt.datetime.now():%Y%m%d-%H%M%S}").resolve()
    address = local.ensure(address)
    job_id = f"llmlab-pretrain-{uuid.uuid4().hex[:8]}"
    # the driver only coordinates: it reserves no CPU, so the workers get all the cluster has
    client.connect(address).submit_job(entrypoint=entrypoint(asdict(cfg), str(out_dir)), submission_id=job_id,
                                       entrypoint_num_cpus=0, metadata={"llmlab.kind": "pretrain"})
    err.print(f"submitted {job_id} to {address}: {cfg.workers} worker(s), ZeRO-{cfg.zero_stage}, "
              f"{'bf16' if cfg.bf16 else 'fp32'}, {cfg.steps} steps")
    if no_wait:
        out.print(job_id)
        return
    status = client.wait(job_id, address, timeout=timeout, on_status=lambda s: err.print(f"  {s}"))
    logs = client.connect(address).get_job_logs(job_id)
    if status != "SUCCEEDED":
        raise Fail(f"job {job_id} {status}:\n" + "\n".join(logs.splitlines()[-15:]))
    summary = record.decode(logs, PretrainRecord).summary
    h = summary["history"]
    table = Table("", "", title=f"pretraining {job_id}")
    for k, v in (("parameters", f"{summary['params']:,}"), ("workers", str(summary["world_size"])),
                 ("validation loss", f"{h[0]['val_loss']:.3f} -> {h[-1]['val_loss']:.3f}"),
                 ("tokens/s (all workers)", f"{summary['tokens_per_s']:,.0f}"),
                 ("model (Hugging Face folder)", str(out_dir / "model"))):
        table.add_row(k, v)
    out.print(table)
    if summary["stage_sweep"]:
        stages = Table("ZeRO stage", "bytes/param between steps", "after backward", "formula", "tokens/s")
        for s in summary["stage_sweep"]:
            stages.add_row(str(s["stage"]), *(f"{s[k] / s['params']:.2f}" for k in
                                              ("bytes_between_steps", "bytes_after_backward", "formula_bytes")),
                           f"{s['tokens_per_s']:,.0f}")
        out.print(stages)
