"""Attention mechanics (lab m08): a numerically stable softmax, scaled dot-product attention with causal,
boolean and padding masks (the semantics of ``torch.nn.functional.scaled_dot_product_attention``), and the
entropy of attention rows against temperature."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from llmlab.scaling.laws import fit_power_law  # noqa: F401  (m08 fits its measured cost with it)


def stable_softmax(x: Tensor, dim: int = -1) -> Tensor:
    """softmax(x) along ``dim`` computed as exp(x - max) / sum: no overflow for logits of any size. Entries
    at -inf get probability 0; a row that is all -inf gives NaN (it has no distribution)."""
    z = x - x.amax(dim=dim, keepdim=True)
    e = torch.exp(z)
    return e / e.sum(dim=dim, keepdim=True)


def attention_mask(t_q: int, t_k: int, *, causal: bool = False, mask: Tensor | None = None,
                   key_padding_mask: Tensor | None = None) -> Tensor | None:
    """Combine the masks into one boolean mask, True where a query may attend, broadcastable to
    (B, ..., Tq, Tk). ``causal``: query i sees keys j <= i (aligned at the start, as torch does);
    ``mask``: boolean, True = may attend; ``key_padding_mask``: (B, Tk), True = a padding key (never seen)."""
    allowed = None
    if causal:
        allowed = torch.ones(t_q, t_k, dtype=torch.bool).tril()
    if mask is not None:
        if mask.dtype != torch.bool:
            raise TypeError("mask must be boolean (True = may attend)")
        allowed = mask if allowed is None else allowed & mask
    if key_padding_mask is not None:
        keep = ~key_padding_mask[:, None, None, :] if key_padding_mask.dim() == 2 else ~key_padding_mask
        allowed = keep if allowed is None else allowed & keep
    return allowed


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None,
                                 causal: bool = False, key_padding_mask: Tensor | None = None,
                                 scale: float | None = None) -> Tensor:
    """softmax(q k^T / sqrt(d) + masks) v for q (..., Tq, d), k (..., Tk, d), v (..., Tk, dv).

    ``mask`` is boolean and broadcastable to (..., Tq, Tk), True where a query may attend; ``causal`` adds
    the lower-triangular mask; ``key_padding_mask`` (B, Tk) is True at padding keys, for q of shape
    (B, H, Tq, d). A query row left with no key to attend to gets zeros (not NaN)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale
    allowed = attention_mask(q.shape[-2], k.shape[-2], causal=causal, mask=mask, key_padding_mask=key_padding_mask)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
        empty = ~allowed.any(-1, keepdim=True)
        scores = scores.masked_fill(empty, 0.0)  # no NaN from an all -inf row...
        weights = stable_softmax(scores, dim=-1).masked_fill(empty, 0.0)  # ...and zeros out
    else:
        weights = stable_softmax(scores, dim=-1)
    return weights @ v


def attention_entropy(scores: Tensor, temperature: float = 1.0) -> Tensor:
    """Entropy in nats of each row of softmax(scores / T). T -> 0 tends to 0 (a one-hot row, when the
    maximum is unique); T -> inf tends to log(n) (uniform over the row's n keys)."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    z = scores / temperature
    z = z - z.amax(-1, keepdim=True)  # log-softmax, stable: the row's maximum is 0
    logp = z - z.exp().sum(-1, keepdim=True).log()
    p = logp.exp()
    return -(p * torch.where(p > 0, logp, torch.zeros_like(logp))).sum(-1)


