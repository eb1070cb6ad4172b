"""Learning from preference pairs: the Bradley-Terry reward-model loss and Direct Preference Optimization."""

from __future__ import annotations

import torch
from torch import Tensor


def log_sigmoid(x: Tensor) -> Tensor:
    """log sigmoid(x) = -log(1 + e^-x), written so that no margin overflows: -max(-x, 0) - log1p(e^-|x|)."""
    return -torch.clamp(-x, min=0) - torch.log1p(torch.exp(-x.abs()))


def bradley_terry_loss(chosen: Tensor, rejected: Tensor) -> Tensor:
    """-log sigmoid(r_chosen - r_rejected), averaged: the negative log-likelihood of the preferences under
    Bradley and Terry's model P(chosen > rejected) = sigmoid(r_chosen - r_rejected)."""
    return -log_sigmoid(chosen - rejected).mean()


def pairwise_accuracy(chosen: Tensor, rejected: Tensor) -> float:
    """The fraction of pairs in which the chosen response scores higher."""
    return float((chosen > rejected).float().mean())


def dpo_loss(policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor,
             beta: float = 0.1, label_smoothing: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """DPO (Rafailov et al. 2023) from summed response log-probabilities: with
    h = beta * ((log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))), the loss per pair is
    -(1 - eps) log sigmoid(h) - eps log sigmoid(-h) (eps: conservative DPO's label smoothing). Returns the
    per-pair losses and the implicit rewards beta * (log pi - log ref) of the chosen and rejected responses."""
    chosen_reward = beta * (policy_chosen - ref_chosen)
    rejected_reward = beta * (policy_rejected - ref_rejected)
    h = chosen_reward - rejected_reward
    losses = -(1 - label_smoothing) * log_sigmoid(h) - label_smoothing * log_sigmoid(-h)
    return losses, chosen_reward.detach(), rejected_reward.detach()
