"""Pretraining a Llama-style LM with DeepSpeed ZeRO (bf16, activation checkpointing) as a Ray Train job.

``pretrain(cfg)`` runs a :class:`ray.train.torch.TorchTrainer`: Ray starts ``cfg.workers`` processes and
their torch.distributed group (gloo on CPU, NCCL on GPUs), and each runs :func:`train_loop`, which hands
the model to ``deepspeed.initialize``. Before the run, every requested ZeRO stage is measured for a few
steps (bytes per rank between steps and at the gradient peak, tokens/s). At the end the partitioned
parameters are gathered and rank 0 writes them as llmlab's Hugging Face folder, reported to Ray Train as the
run's checkpoint (``ray.train.report``) together with the loss history.

The same function runs on a laptop's local Ray head, inside a Ray job (``llmlab pretrain``), or on a
KubeRay cluster (the chart's pretraining RayJob): only ``workers``, ``cpus_per_worker`` and ``gpus_per_worker``
change.
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from llmlab.distributed import zero
from llmlab.distributed.throughput import flops_per_token
from llmlab.transformer import TransformerConfig, TransformerLM, cosine_lr, cross_entropy, get_batch

DATA = ("tinyshakespeare",)  # or a path to a .npy file of token ids (train) next to a *_val.npy


@dataclass(frozen=True)
class PretrainConfig:
    # model (Llama-shaped: RoPE, RMSNorm, SwiGLU)
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    context: int = 64
    # data
    data: str = "tinyshakespeare"
    # optimisation
    steps: int = 60
    micro_batch: int = 8  # sequences per rank per micro-step
    grad_accum: int = 1
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup: int = 10
    clip: float = 1.0
    weight_decay: float = 0.0
    # parallelism and precision
    zero_stage: int = 3
    bf16: bool = True
    activation_checkpointing: bool = True
    workers: int = 2
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    # measurement
    eval_every: int = 20
    eval_batches: int = 4
    stage_sweep: tuple[int, ...] = ()  # ZeRO stages measured for memory and speed before the run
    sweep_steps: int = 3
    seed: int = 0
    name: str = "llmlab-pretrain"

    def __post_init__(self):
        if self.zero_stage not in zero.STAGES or any(s not in zero.STAGES for s in self.stage_sweep):
            raise ValueError(f"ZeRO stages are {zero.STAGES}")
        if self.data not in DATA and not self.data.endswith(".npy"):
            raise ValueError(f"data must be one of {DATA} or a .npy file of token ids")
        for name in ("d_model", "n_layers", "n_heads", "context", "steps", "micro_batch", "grad_accum", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.d_model % self.n_heads:
            raise ValueError("d_model must be divisible by n_heads")
        if self.cpus_per_worker <= 0 or self.gpus_per_worker < 0:
            raise ValueError("cpus_per_worker must be positive and gpus_per_worker not negative")
        object.__setattr__(self, "stage_sweep", tuple(self.stage_sweep))

    @classmethod
    def from_dict(cls, d: dict) -> PretrainConfig:
        """Unknown keys are an error (a typo must not silently train the default)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown pretraining setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**d)

    @classmethod
    def from_file(cls, path) -> PretrainConfig:
        """A TOML, YAML or JSON file of settings (a ``[pretrain]`` table or the top level)."""
        path = Path(path)
        text = path.read_text()
        if path.suffix == ".toml":
            import tomllib

            d = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            d = yaml.safe_load(text)
        elif path.suffix == ".json":
            d = json.loads(text)
        else:
            raise ValueError(f"{path.name}: a pretraining config is .toml, .yaml or .json")
        if not isinstance(d, dict):
            raise ValueError(f"{path.name}: expected a table of settings")
        return cls.from_dict(d.get("pretrain", d))

    @property
    def tokens_per_step(self) -> int:
        return self.workers * self.micro_batch * self.grad_accum * self.context


QUICK = PretrainConfig(stage_sweep=(0, 1, 2, 3), cpus_per_worker=0.5)
# The syllabus's ~70M-parameter model (non-embedding 69M), on one GPU or N workers of a KubeRay cluster.
FULL = PretrainConfig(d_model=640, n_layers=14, n_heads=10, context=512, steps=5000, micro_batch=32, lr=6e-4,
                      min_lr=6e-5, warmup=200, workers=1, gpus_per_worker=1, eval_every=250, eval_batches=20,
                      stage_sweep=(0, 3))


# --- inside each Ray Train worker ------------------------------------------------------------------------
def load_tokens(data: str) -> tuple[np.ndarray, np.ndarray, int, object]:
    """(train ids, validation ids, vocabulary size, tokenizer or None)."""
    if data == "tinyshakespeare":
        from llmlab.data import shakespeare

        tok, train, val = shakespeare.char_tokens()
        return train, val, tok.vocab_size, tok
    train = np.load(data)
    val = np.load(data.removesuffix(".npy") + "_val.npy")
    return train.astype(np.int64), val.astype(np.int64), int(max(train.max(), val.max())) + 1, None


def deepspeed_config(cfg: PretrainConfig, stage: int, n_params: int) -> dict:
    """DeepSpeed's settings; communication buckets sized to the model (the defaults, 5e8 elements, would
    allocate gigabytes for a small one)."""
    bucket = max(n_params, 10_000)
    z = {"stage": stage, "reduce_bucket_size": bucket, "allgather_bucket_size": bucket}
    if stage == 3:
        z |= {"stage3_prefetch_bucket_size": bucket, "stage3_param_persistence_threshold": 0, "sub_group_size": bucket}
    return {"train_micro_batch_size_per_gpu": cfg.micro_batch, "gradient_accumulation_steps": cfg.grad_accum,
            "gradient_clipping": cfg.clip, "bf16": {"enabled": cfg.bf16}, "zero_optimization": z,
            "zero_allow_untested_optimizer": True, "steps_per_print": 10**9, "wall_clock_breakdown": False}


def _engine(cfg: PretrainConfig, stage: int, vocab: int):
    import deepspeed

    model = TransformerLM(TransformerConfig(vocab, context=cfg.context, d_model=cfg.d_model, n_layers=cfg.n_layers,
                                            n_heads=cfg.n_heads), seed=cfg.seed)
    model.activation_checkpointing = cfg.activation_checkpointing
    n_params = model.n_params
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config=deepspeed_config(cfg, stage, n_params))
    return engine, n_params


def _micro_step(engine, train: np.ndarray, cfg: PretrainConfig, gen: torch.Generator) -> torch.Tensor:
    x, y = get_batch(train, cfg.micro_batch, cfg.context, str(engine.device), generator=gen)
    loss = cross_entropy(engine(x).float(), y)
    engine.backward(loss)
    return loss.detach()


def _measure_stage(cfg: PretrainConfig, stage: int, train: np.ndarray, vocab: int, gen) -> dict:
    """A few optimizer steps at one ZeRO stage: bytes this rank holds between steps and after backward
    (parameters, gradients, optimizer states and DeepSpeed's buffers), and tokens/s of the steps after
    the first."""
    import gc

    device = "cuda" if cfg.gpus_per_worker else "cpu"
    gc.collect()
    base = zero.held_bytes(device)
    engine, n_params = _engine(cfg, stage, vocab)
    peak, t0 = 0, 0.0
    for step in range(cfg.sweep_steps + 2):  # step 0 creates the optimizer states; step 1 is measured
        if step == 2:
            t0 = time.perf_counter()
        for _ in range(cfg.grad_accum):
            _micro_step(engine, train, cfg, gen)
        if step == 1:
            gc.collect()
            peak = zero.held_bytes(device) - base
        engine.step()
    seconds = time.perf_counter() - t0
    gc.collect()
    held = zero.held_bytes(device) - base
    engine.destroy()
    del engine
    gc.collect()
    return {"stage": stage, "params": n_params, "bytes_between_steps": held, "bytes_after_backward": peak,
            "formula_bytes": zero.zero_model_state_bytes(n_params, cfg.workers, stage),
            "tokens_per_s": cfg.sweep_steps * cfg.tokens_per_step / seconds}


def _partition_layout_holds(engine, cfg: PretrainConfig, vocab: int, rank: int) -> bool:
    """Whether every parameter slice DeepSpeed gave this rank at ZeRO-3 is :func:`zero.partition_flat`'s
    slice of the same (bf16) parameter: llmlab's model of the layout, checked on the real thing."""
    import torch.distributed as dist

    fresh = TransformerLM(TransformerConfig(vocab, context=cfg.context, d_model=cfg.d_model, n_layers=cfg.n_layers,
                                            n_heads=cfg.n_heads), seed=cfg.seed)
    ws = engine.world_size
    mine = lambda q, dtype: zero.partition_flat(q.detach().flatten().to(dtype), ws)[rank]
    ours = all(torch.equal(p.ds_tensor.cpu(), mine(q, p.ds_tensor.dtype))
               for p, q in zip(engine.module.parameters(), fresh.parameters(), strict=True))
    agree = torch.tensor([int(ours)], device=engine.device)  # NCCL reduces GPU tensors only
    dist.all_reduce(agree, op=dist.ReduceOp.MIN)
    return bool(agree.item())


def _evaluate(engine, val: np.ndarray, cfg: PretrainConfig) -> float:
    gen = torch.Generator().manual_seed(1234)  # the same batches on every rank and at every evaluation
    engine.eval()
    with torch.no_grad():
        losses = [cross_entropy(engine(x).float(), y).item() for x, y in
                  (get_batch(val, cfg.micro_batch, cfg.context, str(engine.device), generator=gen)
                   for _ in range(cfg.eval_batches))]
    engine.train()
    return float(np.mean(losses))


def _consolidate(engine, cfg: PretrainConfig, vocab: int, tokenizer, out: Path) -> None:
    """Gather every partitioned parameter (all ranks take part) and write the fp32 model on rank 0."""
    import deepspeed

    from llmlab import hf

    params = list(engine.module.parameters())
    with deepspeed.zero.GatheredParameters(params, enabled=cfg.zero_stage == 3):
        if engine.global_rank == 0:
            model = TransformerLM(TransformerConfig(vocab, context=cfg.context, d_model=cfg.d_model,
                                                    n_layers=cfg.n_layers, n_heads=cfg.n_heads))
            model.load_state_dict({k: v.detach().float().cpu() for k, v in engine.module.state_dict().items()})
            hf.export(model, out, tokenizer=tokenizer)


def train_loop(config: dict) -> None:
    """The function each Ray Train worker runs."""
    import ray.train

    cfg = PretrainConfig.from_dict(config)
    rank = ray.train.get_context().get_world_rank()
    torch.set_num_threads(max(1, math.floor(cfg.cpus_per_worker)))
    train, val, vocab, tokenizer = load_tokens(cfg.data)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank)  # each rank its own batches
    phases = {"start": time.perf_counter()}
    sweep = [_measure_stage(cfg, s, train, vocab, gen) for s in cfg.stage_sweep]
    phases["stage_sweep"] = time.perf_counter()
    engine, n_params = _engine(cfg, cfg.zero_stage, vocab)
    layout = _partition_layout_holds(engine, cfg, vocab, rank) if cfg.zero_stage == 3 else None
    history, t0, tokens = [], time.perf_counter(), 0
    for step in range(1, cfg.steps + 1):
        lr = cosine_lr(step, cfg.lr, cfg.min_lr, cfg.warmup, cfg.steps)
        for group in engine.optimizer.param_groups:
            group["lr"] = lr
        losses = [_micro_step(engine, train, cfg, gen) for _ in range(cfg.grad_accum)]
        engine.step()
        tokens += cfg.tokens_per_step
        if step % cfg.eval_every == 0 or step in (1, cfg.steps):
            row = {"step": step, "tokens": tokens, "lr": engine.get_lr()[0],
                   "train_loss": float(torch.stack(losses).mean()), "val_loss": _evaluate(engine, val, cfg),
                   "seconds": time.perf_counter() - t0}
            row["tokens_per_s"] = tokens / row["seconds"]
            history.append(row)
            ray.train.report(row)  # every rank reports: in Ray Train a report is a barrier
    phases["train"] = time.perf_counter()
    matmul = n_params - vocab * cfg.d_model  # all but the embedding table (ZeRO-3 empties model.parameters())
    summary = {"params": n_params, "flops_per_token": flops_per_token(matmul, cfg.n_layers, cfg.context, cfg.d_model),
               "tokens_per_s": tokens / (time.perf_counter() - t0), "history": history, "stage_sweep": sweep,
               "config": asdict(cfg), "world_size": engine.world_size, "zero3_layout_is_partition_flat": layout}
    with tempfile.TemporaryDirectory() as tmp:
        _consolidate(engine, cfg, vocab, tokenizer, Path(tmp) / "model")
        phases["consolidate"] = time.perf_counter()
        summary["seconds"] = {k: phases[k] - phases[p] for p, k in itertools.pairwise(phases)}
        if rank == 0:
            (Path(tmp) / "summary.json").write_text(json.dumps(summary, indent=1))
            ray.train.report(history[-1], checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(history[-1])


# --- the driver ---------------------------------------------------------------------------------------------
def pretrain(cfg: PretrainConfig, out_dir, address: str | None = None) -> dict:
    """Run ``cfg`` on the Ray cluster at ``address`` (None: the one this process is connected to, the one
    ``RAY_ADDRESS`` names, or a new local instance). Writes ``out_dir/model`` (Hugging Face folder) and
    ``out_dir/summary.json``, and returns the summary."""
    from llmlab.distributed.ray_train import fit

    out_dir = Path(out_dir).resolve()
    result = fit(train_loop, asdict(cfg), workers=cfg.workers, cpus_per_worker=cfg.cpus_per_worker,
                 gpus_per_worker=cfg.gpus_per_worker, name=cfg.name, storage=str(out_dir / "ray"), address=address)
    with result.checkpoint.as_directory() as ckpt:
        shutil.copytree(Path(ckpt) / "model", out_dir / "model", dirs_exist_ok=True)
        summary = json.loads((Path(ckpt) / "summary.json").read_text())
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
