"""Large batches on a fixed token budget: does the linear or the square-root learning-rate rule keep the
loss of the small-batch run, and does gradient accumulation reproduce the large batch? (Goyal et al. 2017;
Malladi et al. 2022 derive the square-root rule for Adam.)"""

from __future__ import annotations

import numpy as np
import torch

from llmlab.distributed.throughput import RULES, scaled_lr, warmup_lr
from llmlab.transformer import TransformerConfig, TransformerLM, cross_entropy, evaluate, get_batch


def train_small(train: np.ndarray, val: np.ndarray, vocab: int, batch: int, lr: float, steps: int,
                accum: int = 1, context: int = 64, warmup_frac: float = 0.1) -> tuple[float, TransformerLM]:
    """A 2-layer Llama-style model trained by AdamW for ``steps`` steps of ``batch`` sequences, each step's
    batch split into ``accum`` micro-batches whose gradients add up; (validation loss, model)."""
    model = TransformerLM(TransformerConfig(vocab, context=context, d_model=48, n_layers=2, n_heads=2), seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    for step in range(1, steps + 1):
        for g in opt.param_groups:
            g["lr"] = warmup_lr(step, lr, max(1, int(steps * warmup_frac)))
        x, y = get_batch(train, batch, context, generator=gen)
        opt.zero_grad(set_to_none=True)
        for xs, ys in zip(x.chunk(accum), y.chunk(accum), strict=True):
            (cross_entropy(model(xs), ys) / accum).backward()
        opt.step()
    return evaluate(model, val, 8, 16), model


def lr_rules(train, val, vocab: int, batches: tuple[int, ...], tokens: int, base_lr: float,
             context: int = 64) -> dict:
    """Validation loss after ``tokens`` tokens at each batch, the lr scaled from ``batches[0]`` by each rule."""
    b0 = batches[0]
    out = {"base": {str(b0): train_small(train, val, vocab, b0, base_lr, tokens // (b0 * context), context=context)[0]}}
    for rule in RULES:
        out[rule] = {str(b): train_small(train, val, vocab, b, scaled_lr(base_lr, batches[0], b, rule),
                                         tokens // (b * context), context=context)[0] for b in batches[1:]}
    return out


def accumulation_gap(train, val, vocab: int, batch: int, micro: int, lr: float, steps: int = 5) -> float:
    """Largest parameter difference between ``steps`` steps of one batch and of ``micro`` accumulated
    micro-batches of the same sequences (zero up to float32 summation order)."""
    one = train_small(train, val, vocab, batch, lr, steps)[1]
    acc = train_small(train, val, vocab, batch, lr, steps, accum=micro)[1]
    pairs = zip(one.state_dict().values(), acc.state_dict().values(), strict=True)
    return max(float((p - q).abs().max()) for p, q in pairs)
