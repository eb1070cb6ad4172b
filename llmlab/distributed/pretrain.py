"""Pretraining a Llama-style LM with DeepSpeed ZeRO (bf16, activation checkpointing) as a Ray Train job.

``pretrain(cfg)`` runs a :class:`ray.train.torch.TorchTrainer`: Ray starts ``cfg.workers`` processes and
their torch.distributed group (gloo on CPU, NCCL on GPUs), and each runs :func:`train_loop`, which hands
the model to ``deepspeed.initialize``. Before the run, every requested ZeRO stage is measured for a few
steps (bytes per rank between steps and at the gradient peak, tokens/s). At the end the partitioned
parameters are gathered and rank 0 writes them as llmlab's Hugging Face folder, reported to Ray Train as the
run's checkpoint (``ray.train.report``) together with the loss history.

With ``engine="ddp"`` the same loop trains with torch DistributedDataParallel instead (lab m17: fp32 over the
pipeline's token shards, each rank streaming its own, metrics logged to Weights & Biases).

The same function runs on a laptop's local Ray head, inside a Ray job (``llmlab pretrain``), or on a
KubeRay cluster (the chart's pretraining RayJob): only ``workers``, ``cpus_per_worker`` and ``gpus_per_worker``
change.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from llmlab import settings
from llmlab.distributed import zero
from llmlab.distributed.throughput import flops_per_token
from llmlab.transformer import TransformerConfig, TransformerLM, cosine_lr, cross_entropy, get_batch

DATA = ("tinyshakespeare",)  # or a .npy file of token ids (train) next to a *_val.npy, or a shard folder
ENGINES = ("deepspeed", "ddp")


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
    engine: str = "deepspeed"  # or "ddp": torch DistributedDataParallel, fp32 (ZeRO and bf16 are DeepSpeed's)
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
    wandb_project: str = ""  # log to Weights & Biases (offline: the run folder is synced later with `wandb sync`)

    def __post_init__(self):
        if self.zero_stage not in zero.STAGES or any(s not in zero.STAGES for s in self.stage_sweep):
            raise ValueError(f"ZeRO stages are {zero.STAGES}")
        if self.data not in DATA and not self.data.endswith(".npy") and not is_shard_folder(self.data):
            raise ValueError(f"data must be one of {DATA}, a .npy file of token ids or a folder of token shards "
                             "(with index.json)")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}")
        if self.engine == "ddp" and (self.stage_sweep or self.bf16 or self.activation_checkpointing):
            raise ValueError("engine ddp trains in fp32 without a ZeRO stage sweep or activation checkpointing: "
                             "set bf16, activation_checkpointing false and stage_sweep empty")
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
        settings.reject_unknown(cls, d, "pretraining")
        return cls(**d)

    @classmethod
    def from_file(cls, path) -> PretrainConfig:
        """A TOML, YAML or JSON file of settings (a ``[pretrain]`` table or the top level)."""
        return cls.from_dict(settings.read_file(path, "pretrain"))

    @property
    def tokens_per_step(self) -> int:
        return self.workers * self.micro_batch * self.grad_accum * self.context


QUICK = PretrainConfig(steps=40, stage_sweep=(0, 1, 2, 3), cpus_per_worker=0.5)
# The syllabus's ~70M-parameter model (non-embedding 69M), on one GPU or N workers of a KubeRay cluster.
FULL = PretrainConfig(d_model=640, n_layers=14, n_heads=10, context=512, steps=5000, micro_batch=32, lr=6e-4,
                      min_lr=6e-5, warmup=200, workers=1, gpus_per_worker=1, eval_every=250, eval_batches=20,
                      stage_sweep=(0, 3))


def is_shard_folder(data: str) -> bool:
    return (Path(data) / "index.json").is_file()


# --- inside each Ray Train worker ------------------------------------------------------------------------
def load_tokens(data: str) -> tuple[np.ndarray | None, np.ndarray, int, object]:
    """(train ids, validation ids, vocabulary size, tokenizer or None); for a shard folder the training ids
    are None: each rank streams its own shards (:func:`batches`)."""
    if is_shard_folder(data):
        from llmlab.pipeline import shards
        from llmlab.tokenization import BPETokenizer

        index = shards.load_index(data)
        val = np.concatenate([shards.read_shard(data, s, verify=True) for s in index["splits"]["val"]])
        tok = BPETokenizer.load(Path(data) / index["tokenizer"]) if index.get("tokenizer") else None
        return None, val.astype(np.int64), index["vocab_size"], tok
    if data == "tinyshakespeare":
        from llmlab.data import shakespeare

        tok, train, val = shakespeare.char_tokens()
        return train, val, tok.vocab_size, tok
    train = np.load(data)
    val = np.load(data.removesuffix(".npy") + "_val.npy")
    return train.astype(np.int64), val.astype(np.int64), int(max(train.max(), val.max())) + 1, None


def data_sources(data: str) -> list[str]:
    """Where the training tokens came from: data-folder paths or URLs (a model card maps them to the data
    manifest's data sets and licenses)."""
    if is_shard_folder(data):
        from llmlab.pipeline import shards

        return [str(s) for s in shards.load_index(data).get("sources", [])]
    return ["tinyshakespeare/input.txt"] if data == "tinyshakespeare" else [data]


def hardware(cfg: PretrainConfig) -> dict:
    """What the run ran on, for its model card: per worker CPUs (and GPUs, with their name), the CPU model."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), None) if Path("/proc/cpuinfo").is_file() else None
    gpu = torch.cuda.get_device_name() if cfg.gpus_per_worker and torch.cuda.is_available() else None
    return {"workers": cfg.workers, "cpus_per_worker": cfg.cpus_per_worker, "gpus_per_worker": cfg.gpus_per_worker,
            "cpu": cpu, "gpu": gpu}


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


class DDPEngine:
    """torch DistributedDataParallel behind the part of DeepSpeed's engine interface the loop uses, so one
    training loop drives both (gradient accumulation: every micro-step's loss is scaled by 1/grad_accum)."""

    def __init__(self, model: TransformerLM, opt: torch.optim.Optimizer, cfg: PretrainConfig):
        import ray.train.torch

        self.module, self.optimizer, self.cfg = model, opt, cfg
        self.ddp = ray.train.torch.prepare_model(model)
        self.device = next(model.parameters()).device
        self.world_size, self.global_rank = torch.distributed.get_world_size(), torch.distributed.get_rank()

    def __call__(self, x):
        return self.ddp(x)

    def backward(self, loss):
        (loss / self.cfg.grad_accum).backward()

    def step(self):
        torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.cfg.clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def get_lr(self):
        return [g["lr"] for g in self.optimizer.param_groups]

    def train(self):
        self.ddp.train()

    def eval(self):
        self.ddp.eval()


def _engine(cfg: PretrainConfig, stage: int, vocab: int):
    model = TransformerLM(TransformerConfig(vocab, context=cfg.context, d_model=cfg.d_model, n_layers=cfg.n_layers,
                                            n_heads=cfg.n_heads), seed=cfg.seed)
    model.activation_checkpointing = cfg.activation_checkpointing
    n_params = model.n_params
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    if cfg.engine == "ddp":
        return DDPEngine(model, opt, cfg), n_params
    import deepspeed

    # DeepSpeed's CPU backend JIT-compiles a shared-memory all-reduce for its inference kernels (training reduces
    # over gloo) in each new worker: it needs a C++ toolchain on every Ray worker, and a build killed midway
    # leaves ~/.cache/torch_extensions/.../lock behind, on which every later run waited forever (the quick
    # deliverable hung for 10 minutes in `make run`). DeepSpeed keeps its probe of compatible ops in one dict,
    # so it can be told the op is unavailable.
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config=deepspeed_config(cfg, stage, n_params))
    return engine, n_params


def batches(cfg: PretrainConfig, train: np.ndarray | None, rank: int, world: int, device: str):
    """Endless training batches for one rank: random windows of the token array (each rank its own seed),
    or the rank's own token shards."""
    if train is None:
        from llmlab.pipeline.shards import stream_batches

        for x, y in stream_batches(cfg.data, rank, world, cfg.micro_batch, cfg.context, cfg.seed):
            yield torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        return
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
    while True:
        yield get_batch(train, cfg.micro_batch, cfg.context, device, generator=gen)


def _micro_step(engine, data, cfg: PretrainConfig) -> torch.Tensor:
    x, y = next(data)
    loss = cross_entropy(engine(x).float(), y)
    engine.backward(loss)
    return loss.detach()


def _measure_stage(cfg: PretrainConfig, stage: int, data, vocab: int) -> dict:
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
            _micro_step(engine, data, cfg)
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
    from contextlib import nullcontext

    from llmlab import hf

    gathered = nullcontext()
    if cfg.engine == "deepspeed":
        import deepspeed

        gathered = deepspeed.zero.GatheredParameters(list(engine.module.parameters()), enabled=cfg.zero_stage == 3)
    with gathered:
        if engine.global_rank == 0:
            model = TransformerLM(TransformerConfig(vocab, context=cfg.context, d_model=cfg.d_model,
                                                    n_layers=cfg.n_layers, n_heads=cfg.n_heads))
            model.load_state_dict({k: v.detach().float().cpu() for k, v in engine.module.state_dict().items()})
            hf.export(model, out, tokenizer=tokenizer)


def _wandb(cfg: PretrainConfig, rank: int, folder: str):
    """Rank 0's Weights & Biases run (offline unless WANDB_MODE says otherwise), or None."""
    if not cfg.wandb_project or rank != 0:
        return None
    import wandb

    return wandb.init(project=cfg.wandb_project, name=cfg.name, config=asdict(cfg), dir=folder,
                      mode=os.environ.get("WANDB_MODE", "offline"), settings=wandb.Settings(silent=True))


def train_loop(config: dict) -> None:
    """The function each Ray Train worker runs."""
    import ray.train

    phases = {"enter": time.perf_counter()}
    cfg = PretrainConfig.from_dict(config)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, math.floor(cfg.cpus_per_worker)))
    train, val, vocab, tokenizer = load_tokens(cfg.data)
    device = "cuda" if cfg.gpus_per_worker else "cpu"
    data = batches(cfg, train, rank, world, device)
    phases["load_data"] = time.perf_counter()
    sweep = [_measure_stage(cfg, s, data, vocab) for s in cfg.stage_sweep]
    phases["stage_sweep"] = time.perf_counter()
    engine, n_params = _engine(cfg, cfg.zero_stage, vocab)
    zero3 = cfg.engine == "deepspeed" and cfg.zero_stage == 3
    layout = _partition_layout_holds(engine, cfg, vocab, rank) if zero3 else None
    wandb_dir = tempfile.mkdtemp(prefix="llmlab-wandb-")
    run = _wandb(cfg, rank, wandb_dir)
    history, t0, tokens = [], time.perf_counter(), 0
    for step in range(1, cfg.steps + 1):
        lr = cosine_lr(step, cfg.lr, cfg.min_lr, cfg.warmup, cfg.steps)
        for group in engine.optimizer.param_groups:
            group["lr"] = lr
        losses = [_micro_step(engine, data, cfg) for _ in range(cfg.grad_accum)]
        engine.step()
        tokens += cfg.tokens_per_step
        if step % cfg.eval_every == 0 or step in (1, cfg.steps):
            row = {"step": step, "tokens": tokens, "lr": engine.get_lr()[0],
                   "train_loss": float(torch.stack(losses).mean()), "val_loss": _evaluate(engine, val, cfg),
                   "seconds": time.perf_counter() - t0}
            row["tokens_per_s"] = tokens / row["seconds"]
            history.append(row)
            if run is not None:
                run.log(row, step=step)
            ray.train.report(row)  # every rank reports: in Ray Train a report is a barrier
    phases["train"] = time.perf_counter()
    matmul = n_params - vocab * cfg.d_model  # all but the embedding table (ZeRO-3 empties model.parameters())
    summary = {"params": n_params, "flops_per_token": flops_per_token(matmul, cfg.n_layers, cfg.context, cfg.d_model),
               "tokens_per_s": tokens / (time.perf_counter() - t0), "history": history, "stage_sweep": sweep,
               "config": asdict(cfg), "world_size": engine.world_size, "zero3_layout_is_partition_flat": layout,
               "data_sources": data_sources(cfg.data), "hardware": hardware(cfg)}
    if run is not None:
        run.summary.update({"params": n_params, "tokens_per_s": summary["tokens_per_s"]})
        run.finish()
    with tempfile.TemporaryDirectory() as tmp:
        _consolidate(engine, cfg, vocab, tokenizer, Path(tmp) / "model")
        phases["consolidate"] = time.perf_counter()
        summary["seconds"] = {k: phases[k] - phases[p] for p, k in itertools.pairwise(phases)}
        if rank == 0:
            if run is not None:  # the offline run folder travels with the checkpoint
                shutil.copytree(Path(wandb_dir) / "wandb", Path(tmp) / "wandb", symlinks=True)
            (Path(tmp) / "summary.json").write_text(json.dumps(summary, indent=1))
            ray.train.report(history[-1], checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(history[-1])
    shutil.rmtree(wandb_dir, ignore_errors=True)


# --- the driver ---------------------------------------------------------------------------------------------
def pretrain(cfg: PretrainConfig, out_dir, address: str | None = None) -> dict:
    """Run ``cfg`` on the Ray cluster at ``address`` (None: the one this process is connected to, the one
    ``RAY_ADDRESS`` names, or a new local instance). Writes ``out_dir/model`` (Hugging Face folder) and
    ``out_dir/summary.json`` (and with ``wandb_project`` the offline run under ``out_dir/wandb``), and returns
    the summary."""
    from llmlab.distributed.ray_train import fit

    out_dir = Path(out_dir).resolve()
    result = fit(train_loop, asdict(cfg), workers=cfg.workers, cpus_per_worker=cfg.cpus_per_worker,
                 gpus_per_worker=cfg.gpus_per_worker, name=cfg.name, storage=str(out_dir / "ray"), address=address)
    with result.checkpoint.as_directory() as ckpt:
        shutil.copytree(Path(ckpt) / "model", out_dir / "model", dirs_exist_ok=True)
        if (Path(ckpt) / "wandb").is_dir():
            shutil.copytree(Path(ckpt) / "wandb", out_dir / "wandb", dirs_exist_ok=True)
        summary = json.loads((Path(ckpt) / "summary.json").read_text())
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
