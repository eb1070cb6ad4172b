"""Contrastive training of a dual encoder with in-batch negatives (Karpukhin et al. 2020; Henderson et al.
2017): each question's own passage is the positive, every other passage in the batch (and any mined hard
negatives) a negative, under a softmax over scaled cosine similarities."""

from __future__ import annotations

import torch
from torch import Tensor


def in_batch_negatives_loss(questions: Tensor, positives: Tensor, hard_negatives: Tensor | None = None,
                            scale: float = 20.0) -> Tensor:
    """Mean over the batch of -log softmax(scale * cos(q_i, candidates))[i], the candidates the B positives
    then the hard negatives (one or more per question, (B * h, dim))."""
    candidates = positives if hard_negatives is None else torch.cat([positives, hard_negatives])
    scores = scale * torch.nn.functional.normalize(questions, dim=-1) @ torch.nn.functional.normalize(
        candidates, dim=-1).T
    return torch.nn.functional.cross_entropy(scores, torch.arange(len(questions), device=questions.device))
