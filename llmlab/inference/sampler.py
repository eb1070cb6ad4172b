"""Turning logits into tokens: the request's temperature / top-k / top-p / min-p filter (shared with lab
m03's sampler), greedy argmax, and seeded draws."""

from __future__ import annotations

import torch
from torch import Tensor

from llmlab.inference.request import Request
from llmlab.information import filtered_probs


def probs(req: Request, logits: Tensor) -> Tensor:
    """The distribution the request samples from, after its filters (float64)."""
    p = req.params
    return filtered_probs(logits.double(), p.temperature, p.top_k, p.top_p, p.min_p)


def sample(req: Request, logits: Tensor) -> int:
    """The next token from logits: the argmax for greedy requests, else a draw."""
    if req.params.temperature == 0:
        return int(logits.argmax())
    return draw(req, probs(req, logits))


def draw(req: Request, dist: Tensor) -> int:
    """A token from a distribution: its argmax for greedy requests, else a draw with the request's seed."""
    if req.params.temperature == 0:
        return int(dist.argmax())
    return int(torch.multinomial(dist, 1, generator=req.generator))
