"""How fast training goes, and how to go bigger: model FLOPs per token and MFU (PaLM, Appendix B, as
nanoGPT computes it), and the learning rate for a larger batch (linear rule, Goyal et al. 2017; square-root
rule, Krizhevsky 2014 / Malladi et al. 2022 for Adam), reached by linear warm-up; and a training step's measured
tokens/s."""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable

RULES = ("linear", "sqrt")


def flops_per_token(n_params: int, n_layers: int, context: int, d_model: int) -> float:
    """Training FLOPs per token of a model with ``n_params`` weights in matrix products: 6 N for the
    forward and backward products with the weights, plus 12 L T d for attention's scores and weighted sums
    over a context of T (PaLM's 6N + 12LHQT, with H Q = d)."""
    return 6 * n_params + 12 * n_layers * context * d_model


def mfu(tokens_per_s: float, flops_per_tok: float, peak_flops: float) -> float:
    """Model FLOPs utilization: the FLOP/s the model's arithmetic needs at this throughput over the
    device's peak (recomputation by activation checkpointing is not counted: that would be HFU)."""
    return tokens_per_s * flops_per_tok / peak_flops


def scaled_lr(base_lr: float, base_batch: int, batch: int, rule: str = "linear") -> float:
    """The learning rate for ``batch`` given one tuned at ``base_batch``: times k (linear) or sqrt(k)."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}")
    k = batch / base_batch
    return base_lr * (k if rule == "linear" else math.sqrt(k))


def warmup_lr(step: int, lr: float, warmup: int) -> float:
    """Linear warm-up from lr / warmup to lr over the first ``warmup`` steps (step counts from 1), then flat."""
    return lr * min(1.0, step / max(warmup, 1))


@contextlib.contextmanager
def torch_threads(n: int):
    """torch on ``n`` threads inside the block (as `make run` gives each job one), the count restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def median_seconds(step: Callable[[], object], steps: int = 12, warmup: int = 2) -> float:
    """The median wall time of ``step()`` over ``steps`` calls after ``warmup`` untimed ones (one core is noisy)."""
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def step_tokens_per_s(cfg, batch: int, steps: int = 12, warmup: int = 2, threads: int = 1) -> float:
    """Tokens/s of a TransformerLM of ``cfg`` (a ``TransformerConfig``) training on random tokens: one forward,
    backward and AdamW step on ``batch`` x context tokens, by ``median_seconds``, on ``threads`` torch threads."""
    import torch

    from llmlab.transformer import TransformerLM, cross_entropy

    with torch_threads(threads):
        model = TransformerLM(cfg, seed=0)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x = torch.randint(0, cfg.vocab_size, (batch, cfg.context + 1), generator=torch.Generator().manual_seed(0))

        def step():
            loss = cross_entropy(model(x[:, :-1]), x[:, 1:])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return batch * cfg.context / median_seconds(step, steps, warmup)
