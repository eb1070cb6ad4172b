"""Probability and information theory (lab m03): entropy, cross-entropy, KL, and sampling.

All quantities are in nats and reduce over the last dimension. Conventions: 0 log 0 = 0; a target that puts
mass where the model puts none has infinite cross-entropy and KL.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _xlogy(x: Tensor, y: Tensor) -> Tensor:
    return torch.special.xlogy(x, y)  # x * log(y), with 0 * log(0) = 0


def entropy(p: Tensor) -> Tensor:
    """H(p) = -sum_i p_i log p_i over the last dim of a (..., V) stack of distributions."""
    return -_xlogy(p, p).sum(-1)


def cross_entropy(p: Tensor, q: Tensor) -> Tensor:
    """H(p, q) = -sum_i p_i log q_i: the expected code length of p's samples under q (inf where q_i = 0 < p_i)."""
    return -_xlogy(p, q).sum(-1)


def kl_divergence(p: Tensor, q: Tensor) -> Tensor:
    """KL(p || q) = sum_i p_i log(p_i / q_i) >= 0, so that H(p, q) = H(p) + KL(p || q)."""
    return cross_entropy(p, q) - entropy(p)


def nll_from_logits(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean negative log-likelihood of ``targets`` (...,) under softmax(logits) (..., V): the LM loss,
    computed with log-sum-exp so large logits do not overflow."""
    logp = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    return -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1).mean()


def masked_softmax(logits: Tensor, mask: Tensor) -> Tensor:
    """Softmax over the last dim where ``mask`` (bool, same shape) is True; masked entries get exactly 0.
    Raises ValueError when a row has no unmasked entry (its distribution would be undefined)."""
    if not mask.any(-1).all():
        raise ValueError("masked_softmax: a row is fully masked, so it has no distribution")
    z = logits.masked_fill(~mask, float("-inf"))
    z = z - z.max(-1, keepdim=True).values
    e = torch.exp(z) * mask
    return e / e.sum(-1, keepdim=True)


def filtered_probs(logits: Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                   min_p: float | None = None) -> Tensor:
    """The distribution a sampler draws from, for logits (..., V).

    Applied in this order, each step renormalising what the previous left (the order of Hugging Face's
    logits warpers): temperature (probs = softmax(logits / T); T = 0 means greedy, a one-hot on the argmax);
    top_k (keep the k most likely); top_p (keep the smallest most-likely set whose probability reaches
    top_p, the token that crosses it included); min_p (keep tokens with p >= min_p * max p). At least one
    token is always kept.
    """
    if temperature < 0:
        raise ValueError("temperature must be >= 0")
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
    z = logits / temperature
    if top_k is not None and top_k < z.shape[-1]:
        kth = z.topk(top_k, dim=-1).values[..., -1:]
        z = z.masked_fill(z < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_z, order = z.sort(dim=-1, descending=True)
        cum = sorted_z.softmax(-1).cumsum(-1)
        drop_sorted = (cum - sorted_z.softmax(-1)) >= top_p  # mass before this token already reaches top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        z = z.masked_fill(drop, float("-inf"))
    if min_p is not None and min_p > 0:
        p = z.softmax(-1)
        z = z.masked_fill(p < min_p * p.max(-1, keepdim=True).values, float("-inf"))
    return z.softmax(-1)


def sample(logits: Tensor, num_samples: int = 1, temperature: float = 1.0, top_k: int | None = None,
           top_p: float | None = None, min_p: float | None = None, generator: torch.Generator | None = None
           ) -> Tensor:
    """Draw ``num_samples`` token ids per row of logits (..., V) from :func:`filtered_probs`: (..., n)."""
    probs = filtered_probs(logits, temperature, top_k, top_p, min_p)
    flat = probs.reshape(-1, probs.shape[-1])
    draws = torch.multinomial(flat, num_samples, replacement=True, generator=generator)
    return draws.reshape(*probs.shape[:-1], num_samples)
