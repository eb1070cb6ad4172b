"""A compute-optimal plan: from a compute budget (FLOPs, or accelerator hours at a utilization), the model
size N and token count D that minimize Chinchilla's L(N, D) under C = 6 N D, the loss to expect with an
interval, and a Llama-style shape that llmlab's ``TransformerLM`` builds with about N parameters."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from llmlab.scaling.laws import ChinchillaFit, bootstrap, fit_chinchilla, start_of

# Dense bf16 peak FLOP/s from the vendors' data sheets (without 2:4 sparsity). "cpu" is measured (float32).
PEAK_FLOPS = {"h200": 989e12, "h100": 989e12, "a100": 312e12}
DEFAULT_MFU = 0.4  # model FLOPs utilization a well-tuned dense run reaches (PaLM reports 46%)


def measured_cpu_flops(seconds: float = 0.5, n: int = 1024) -> float:
    """float32 matmul FLOP/s of this machine (torch, all its threads): the best of repeated n x n products."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best, t_end = math.inf, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def peak_flops(device: str) -> float:
    if device == "cpu":
        return measured_cpu_flops()
    try:
        return PEAK_FLOPS[device]
    except KeyError:
        raise ValueError(f"unknown device {device!r}; one of {sorted(PEAK_FLOPS) + ['cpu']}") from None


def llama_params(vocab: int, d_model: int, n_layers: int, d_ff: int | None = None, tied: bool = False) -> int:
    """TransformerLM's parameter count: per layer 4 d^2 (attention) + 3 d d_ff (SwiGLU) + 2 d (RMSNorms);
    embedding and head (v d each, one if tied) and the final norm."""
    d_ff = d_ff or 32 * math.ceil(8 * d_model / 3 / 32)
    return n_layers * (4 * d_model**2 + 3 * d_model * d_ff + 2 * d_model) + vocab * d_model * (1 if tied else 2) \
        + d_model


def shape_for(n_params: float, vocab: int = 32000, head_dim: int = 64) -> dict:
    """The (n_layers, d_model, n_heads) with d_model a multiple of ``head_dim`` and an aspect ratio
    d_model / n_layers between 32 and 128 (Kaplan et al. find the loss flat across that range) whose count
    is closest to ``n_params`` (in log)."""
    best = None
    for n_layers in range(1, 129):
        for d_model in range(head_dim, 32 * 1024 + 1, head_dim):
            if not 32 <= d_model / n_layers <= 128:
                continue
            count = llama_params(vocab, d_model, n_layers)
            gap = abs(math.log(count / n_params))
            if best is None or gap < best[0]:
                best = (gap, n_layers, d_model, count)
    _, n_layers, d_model, count = best
    return {"n_layers": n_layers, "d_model": d_model, "n_heads": d_model // head_dim, "vocab_size": vocab,
            "params": count}


@dataclass
class Plan:
    flops: float
    N: float
    D: float
    loss: float
    loss_interval: tuple[float, float]
    tokens_per_param: float
    shape: dict
    fit: dict
    hours: float | None = None
    device: str | None = None


def plan(flops: float | None = None, *, hours: float | None = None, device: str = "h200", mfu: float = DEFAULT_MFU,
         fit: ChinchillaFit | None = None, points: tuple | None = None, n_boot: int = 200, vocab: int = 32000,
         seed: int = 0) -> Plan:
    """The compute-optimal N and D for ``flops`` (or ``hours`` of ``device`` at ``mfu``). The fit is
    Approach 3 on ``points`` (N, D, L), by default the published Figure 4 points; the loss interval is the
    95% bootstrap interval of the fitted L at the plan (``n_boot`` refits)."""
    from llmlab.scaling import published

    if (flops is None) == (hours is None):
        raise ValueError("give either flops or hours")
    if hours is not None:
        if hours <= 0 or not 0 < mfu <= 1:
            raise ValueError("hours must be > 0 and mfu in (0, 1]")
        flops = hours * 3600 * peak_flops(device) * mfu
    if not (flops > 0 and math.isfinite(flops)):
        raise ValueError("flops must be a positive number")
    points = points if points is not None else published.chinchilla_points()
    fit = fit or ChinchillaFit(**fit_chinchilla(*points, keep=64))
    N, D = fit.compute_optimal(flops)
    def refit_loss(n, d, l):
        return ChinchillaFit(**fit_chinchilla(n, d, l, starts=start_of(fit))).loss(N, D)

    refits = bootstrap(refit_loss, points, n=n_boot, seed=seed)
    return Plan(flops=flops, N=N, D=D, loss=float(fit.loss(N, D)),
                loss_interval=(float(refits["low"]), float(refits["high"])), tokens_per_param=D / N,
                shape=shape_for(N, vocab), fit=fit.as_dict(), hours=hours, device=device if hours else None)


def isoflop_profile(fit: ChinchillaFit, flops: float, spread: float = 10.0, points: int = 41):
    """N on a log grid around the optimum (x/÷ ``spread``) and the fitted loss at D = C / (6 N)."""
    n_opt, _ = fit.compute_optimal(flops)
    N = np.geomspace(n_opt / spread, n_opt * spread, points)
    return N, fit.loss(N, flops / (6 * N))
