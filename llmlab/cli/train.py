"""Training at scale, each verb a Ray job on a local head or any Ray cluster: ``llmlab pretrain`` (DeepSpeed
ZeRO or DDP on Ray Train) and ``llmlab pipeline`` (Common Crawl to token shards on Ray Data)."""

from __future__ import annotations

import datetime as dt
import json
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
    """Pretrain a Llama-style LM with DeepSpeed ZeRO (bf16, activation checkpointing), or with DDP on the token
    shards of `llmlab pipeline`, as a Ray Train job on a local head or any Ray cluster; prints the loss,
    tokens/s and the per-stage memory table."""
    from llmlab.distributed import pretrain
    from llmlab.platform.jobs import record
    from llmlab.platform.jobs.pretrain_job import PretrainRecord, entrypoint

    cfg = _settings(config, {"quick": pretrain.QUICK, "full": pretrain.FULL}, pretrain.PretrainConfig)
    out_dir = (out_dir or Path("runs") / f"pretrain-{dt.datetime.now():%Y%m%d-%H%M%S}").resolve()
    logs = _run_job(address, "pretrain", entrypoint(asdict(cfg), str(out_dir)), timeout, no_wait,
                    f"{cfg.workers} worker(s), {'DDP' if cfg.engine == 'ddp' else f'ZeRO-{cfg.zero_stage}'}, "
                    f"{'bf16' if cfg.bf16 else 'fp32'}, {cfg.steps} steps")
    if logs is None:
        return
    summary = record.decode(logs, PretrainRecord).summary
    h = summary["history"]
    table = Table("", "", title=f"pretraining into {out_dir}")
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


def _settings(config: str, presets: dict, cls):
    """A preset by name, or ``cls.from_file(config)``; a missing or bad file is a usage error (exit 2)."""
    try:
        return presets[config] if config in presets else cls.from_file(config)
    except FileNotFoundError:
        raise Fail(f"no such config file: {config} (or use a preset: {', '.join(presets)})", 2) from None
    except (ValueError, TypeError) as e:
        raise Fail(f"{config}: {e}", 2) from None


def _run_job(address: str | None, kind: str, command: str, timeout: float, no_wait: bool, what: str) -> str | None:
    """Submit ``command`` as a Ray job (its driver reserves no CPU: it only coordinates, so the workers get
    all the cluster has), wait for it and return its logs; None with --no-wait (the job id is printed)."""
    from llmlab.platform.jobs import client, local

    address = local.ensure(address)
    job_id = f"llmlab-{kind}-{uuid.uuid4().hex[:8]}"
    client.connect(address).submit_job(entrypoint=command, submission_id=job_id, entrypoint_num_cpus=0,
                                       metadata={"llmlab.kind": kind})
    err.print(f"submitted {job_id} to {address}: {what}")
    if no_wait:
        out.print(job_id)
        return None
    status = client.wait(job_id, address, timeout=timeout, on_status=lambda s: err.print(f"  {s}"))
    logs = client.connect(address).get_job_logs(job_id)
    if status != "SUCCEEDED":
        raise Fail(f"job {job_id} {status}:\n" + "\n".join(logs.splitlines()[-15:]))
    return logs


@app.command("pipeline")
def pipeline_cmd(sources: Annotated[list[str] | None, typer.Argument(
                     help="WARC/WET files or http(s) URLs (Common Crawl's https://data.commoncrawl.org/...); "
                          "default: the shared Common Crawl samples")] = None,
                 address: AddressOpt = None,
                 out_dir: Annotated[Path | None, typer.Option("--out", help="where the shards, tokenizer and report "
                                                              "go (default runs/pipeline-<time>)")] = None,
                 config: Annotated[Path | None, typer.Option(help="a JSON file of PipelineConfig settings")] = None,
                 timeout: Annotated[float, typer.Option(help="seconds to wait for the job")] = 6 * 3600,
                 no_wait: Annotated[bool, typer.Option("--no-wait", help="submit and print the job id")] = False):
    """Stream Common Crawl files through extraction, language, quality and toxicity filters, dedup and PII
    masking on Ray Data, and write uint16 token shards; prints the per-stage report. Train on the shards
    with `llmlab pretrain` (data = the output folder, engine = "ddp")."""
    from llmlab.pipeline.run import PipelineConfig
    from llmlab.platform.jobs import record
    from llmlab.platform.jobs.pipeline_job import PipelineRecord, entrypoint

    try:
        settings = json.loads(config.read_text()) if config else {}
        if not isinstance(settings, dict):
            raise ValueError("expected a JSON object of settings")
        cfg = PipelineConfig.from_dict({**settings, **({"sources": sources} if sources else {})})
    except FileNotFoundError:
        raise Fail(f"no such config file: {config}", 2) from None
    except (ValueError, TypeError) as e:
        raise Fail(f"bad pipeline config: {e}", 2) from None
    out_dir = (out_dir or Path("runs") / f"pipeline-{dt.datetime.now():%Y%m%d-%H%M%S}").resolve()
    logs = _run_job(address, "pipeline", entrypoint(asdict(cfg), str(out_dir)), timeout, no_wait,
                    f"{len(cfg.sources)} source(s)")
    if logs is None:
        return
    report = record.decode(logs, PipelineRecord).report
    table = Table("stage", "docs in", "docs out", "MB out", "dropped", title=f"pipeline into {out_dir}")
    for r in report["stages"]:
        table.add_row(r["stage"], str(r["docs_in"]), str(r["docs_out"]), f"{r['bytes_out'] / 1e6:.2f}",
                      ", ".join(f"{k} {v}" for k, v in r["dropped"].items()))
    out.print(table)
    if report["shards"]:
        out.print(f"shards: {report['shards']}; train on them: llmlab pretrain CONFIG with data = \"{out_dir}\", "
                  'engine = "ddp", bf16 = false, activation_checkpointing = false')


@app.command("rlhf")
def rlhf_cmd(config: Annotated[str, typer.Argument(help="a .toml/.yaml/.json file of RLHFConfig settings, or a "
                                                        "preset: quick (CPU, minutes), full")] = "quick",
             address: AddressOpt = None,
             out_dir: Annotated[Path | None, typer.Option("--out", help="where the history, plots and policy go "
                                                          "(default runs/rlhf-<time>)")] = None,
             timeout: Annotated[float, typer.Option(help="seconds to wait for the job")] = 6 * 3600,
             no_wait: Annotated[bool, typer.Option("--no-wait", help="submit and print the job id")] = False,
             metrics_port: Annotated[int | None, typer.Option(help="serve the KL tracker's Prometheus gauges on "
                                                              "this port of the job's node while it runs")] = None,
             metrics_addr: Annotated[str, typer.Option(help="the address to serve them on")] = "127.0.0.1"):
    """Lab m13's toy chatbot: SFT, a Bradley-Terry reward model, PPO with rollout workers, the reward model
    and the learner as Ray actors, and DPO, as a Ray job; prints the held-out scores of the three policies."""
    from llmlab.platform.jobs import record
    from llmlab.platform.jobs.rlhf_job import RLHFRecord, entrypoint
    from llmlab.rlhf import run
    from llmlab.rlhf.train import RLHFConfig

    cfg = _settings(config, {"quick": run.QUICK, "full": run.FULL}, RLHFConfig)
    out_dir = (out_dir or Path("runs") / f"rlhf-{dt.datetime.now():%Y%m%d-%H%M%S}").resolve()
    logs = _run_job(address, "rlhf", entrypoint(asdict(cfg), str(out_dir), metrics_port, metrics_addr), timeout,
                    no_wait, f"{cfg.rollout_workers} rollout worker(s), {cfg.iterations} PPO iterations")
    if logs is None:
        return
    summary = record.decode(logs, RLHFRecord).summary
    table = Table("policy", "gold (held out)", "on topic", "toxic", title=f"RLHF into {out_dir}")
    for name, e in summary["evaluation"].items():
        table.add_row(name.upper(), f"{e['gold']:+.3f}", f"{e['on_topic']:.1%}", f"{e['toxic']:.1%}")
    out.print(table)
    first, last = summary["ppo"]["first"], summary["ppo"]["last"]
    out.print(f"reward model: held-out pairwise accuracy {summary['reward_model']['held_out_accuracy']:.3f}; "
              f"PPO reward {first['reward']:.2f} -> {last['reward']:.2f}, KL {last['kl']:.2f} nats "
              f"(target {summary['config']['kl_target']:g}), KL coefficient {last['kl_coef']:.3f}")
