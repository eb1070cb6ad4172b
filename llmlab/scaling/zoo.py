"""A model zoo for scaling laws: Llama-style LMs of several sizes, each trained by llmlab and evaluated at
several token budgets along its run (a learning curve gives L(N, D) at every checkpoint, as Kaplan et al.'s
learning curves do). The learning rate is constant after warm-up, so an early checkpoint is not penalized
by a schedule tuned for a longer run (the caveat Hoffmann et al. raise about cosine cycles).

Every model sees the same tokens (as in Kaplan et al.'s Figure 1): L(N) is read at the last checkpoint,
L(D) and L(C) are the envelopes of the learning curves over models (the lowest loss any model reaches by a
token count or a compute). Along the way the gradient noise scale is measured.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from llmlab.scaling.noise import NoiseScale, batch_gradient_norms
from llmlab.transformer import TransformerConfig, TransformerLM, clip_grad_norm, cross_entropy, evaluate, get_batch


@dataclass(frozen=True)
class ZooConfig:
    shapes: tuple[tuple[int, int, int], ...]  # (d_model, n_layers, n_heads) per model
    steps: int  # per model, all on the same token stream
    context: int = 64
    batch_size: int = 8
    checkpoints: int = 8  # evaluations per run, log-spaced in tokens
    lr: float = 3e-3
    warmup: int = 20
    eval_batches: int = 8
    noise_parts: int = 4  # slices of a batch for the noise-scale estimate
    seed: int = 0


QUICK = ZooConfig(shapes=((32, 2, 2), (48, 2, 2), (64, 3, 2), (96, 3, 3), (128, 4, 4)), steps=300)
FULL = ZooConfig(shapes=((64, 3, 2), (128, 4, 4), (192, 4, 4), (256, 6, 4), (384, 6, 6), (512, 8, 8), (768, 10, 12)),
                 steps=8000, context=256, batch_size=32, checkpoints=12, lr=1e-3, warmup=200)


def non_embedding_params(model: TransformerLM) -> int:
    """Kaplan et al.'s N: every parameter but the token embedding and the output head."""
    return sum(p.numel() for name, p in model.named_parameters() if name not in ("embed", "head"))


def train_zoo(cfg: ZooConfig, train_tokens: np.ndarray, val_tokens: np.ndarray, vocab_size: int,
              device: str = "cpu", on_model=None) -> list[dict]:
    """Train every model of the zoo; one record per (model, checkpoint): N (non-embedding), N_total, D
    (tokens seen), C = 6 N D, val_loss (nats/token), b_simple (the noise scale so far), seconds.
    ``on_model(model, last_record)`` is called with each trained model (lab m14 evaluates them)."""
    from llmlab.optim import AdamW

    records = []
    tokens_per_step = cfg.batch_size * cfg.context
    for d_model, n_layers, n_heads in cfg.shapes:
        model = TransformerLM(TransformerConfig(vocab_size, context=cfg.context, d_model=d_model,
                                                n_layers=n_layers, n_heads=n_heads), seed=cfg.seed).to(device)
        N = non_embedding_params(model)
        marks = {int(s) for s in np.geomspace(max(cfg.steps / 32, 4), cfg.steps, cfg.checkpoints).round()}
        opt = AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0)
        gen = torch.Generator().manual_seed(cfg.seed)
        noise, t0 = NoiseScale(), time.perf_counter()
        for step in tqdm(range(1, cfg.steps + 1), desc=f"zoo N={N / 1e6:.2f}M", mininterval=2, leave=False):
            for group in opt.param_groups:
                group["lr"] = cfg.lr * min(1.0, step / cfg.warmup)
            x, y = get_batch(train_tokens, cfg.batch_size, cfg.context, device, generator=gen)
            loss = cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            clip_grad_norm(model.parameters(), 1.0)
            opt.step()
            if step in marks:
                noise.update(*batch_gradient_norms(model, cross_entropy, x, y, cfg.noise_parts))
                D = step * tokens_per_step
                records.append({"d_model": d_model, "n_layers": n_layers, "N": N, "N_total": model.n_params,
                                "D": D, "C": 6 * N * D, "step": step,
                                "val_loss": evaluate(model, val_tokens, cfg.eval_batches, cfg.batch_size),
                                "train_loss": loss.item(), "b_simple": noise.b_simple,
                                "seconds": time.perf_counter() - t0})
        if on_model:
            on_model(model.eval(), records[-1])
    return records


def envelope(records: list[dict], key: str = "C", points: int = 12) -> tuple[list[float], list[float]]:
    """The lowest loss any model reaches by a given compute (``key="C"``: Kaplan et al.'s L(C) frontier) or
    token count (``key="D"``: the data-limited L(D)), on a log grid; each learning curve is interpolated in
    log C (or log D) between its checkpoints."""
    grid = np.geomspace(min(r[key] for r in records) * 2, max(r[key] for r in records), points)
    best = np.full(points, np.inf)
    for N in {r["N"] for r in records}:
        curve = sorted((r[key], r["val_loss"]) for r in records if r["N"] == N)
        x, loss = np.log([p[0] for p in curve]), np.array([p[1] for p in curve])
        inside = (np.log(grid) >= x[0]) & (np.log(grid) <= x[-1])
        best[inside] = np.minimum(best[inside], np.interp(np.log(grid[inside]), x, loss))
    keep = np.isfinite(best)
    return grid[keep].tolist(), best[keep].tolist()
