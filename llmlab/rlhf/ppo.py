"""The mathematics of KL-regularized PPO for language models (Stiennon et al. 2020; Ouyang et al. 2022), as
Ziegler et al. 2019 set it up and Hugging Face TRL implements it.

Tensors are (batch, response tokens), right-padded; ``mask`` is 1 on the response's tokens and 0 after.
A response is one episode: per-token rewards are the KL penalty against the frozen reference policy, and
the reward model's score is added at the response's last token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

KL_ESTIMATORS = ("k1", "k2", "k3")


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """The mean of ``x`` over the positions where ``mask`` is 1."""
    return (x * mask).sum() / mask.sum()


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """The variance of ``x`` over the masked positions (with Bessel's correction when ``unbiased``)."""
    var = masked_mean((x - masked_mean(x, mask)) ** 2, mask)
    if unbiased:
        n = mask.sum()
        var = var * n / (n - 1)
    return var


def whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """(x - mean) / sqrt(var + eps) over the masked positions; with ``shift_mean`` False the mean is added
    back (only the scale is normalized, as for rewards)."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    return out if shift_mean else out + mean


def kl_estimate(logprobs: Tensor, ref_logprobs: Tensor, kind: str = "k1") -> Tensor:
    """Per-token estimates of KL(policy || reference) from tokens sampled from the policy (Schulman 2020,
    "Approximating KL divergence"), with log r = log p_ref(x) - log p(x):

    - k1 = -log r (unbiased, high variance, can be negative);
    - k2 = (log r)^2 / 2 (biased, low variance);
    - k3 = (r - 1) - log r (unbiased, low variance, never negative).
    """
    log_r = ref_logprobs - logprobs
    if kind == "k1":
        return -log_r
    if kind == "k2":
        return 0.5 * log_r**2
    if kind == "k3":
        return torch.expm1(log_r) - log_r
    raise ValueError(f"KL estimator must be one of {KL_ESTIMATORS}")


def token_rewards(scores: Tensor, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, kl_coef: float,
                  kind: str = "k1") -> tuple[Tensor, Tensor]:
    """Per-token rewards: -kl_coef * KL estimate at every response token, plus the reward model's score
    (one per response) at the response's last token. Returns (rewards, per-token KL), zero where masked."""
    kl = kl_estimate(logprobs, ref_logprobs, kind) * mask
    rewards = -kl_coef * kl
    last = (mask.cumsum(1) == mask.sum(1, keepdim=True)) & mask.bool()  # the last response token of each row
    rewards = rewards + last * scores[:, None]
    return rewards, kl


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 0.95) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016): delta_t = r_t + gamma V_{t+1} - V_t and
    A_t = sum_l (gamma lam)^l delta_{t+l}, with V = 0 after the response's end. Returns (advantages,
    returns = advantages + values), not whitened."""
    values, rewards = values * mask, rewards * mask
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    T = rewards.shape[1]
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last
        advantages[:, t] = last
    return advantages, advantages + values


def policy_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor,
                clip: float = 0.2) -> tuple[Tensor, Tensor]:
    """PPO's clipped surrogate (Schulman et al. 2017), as a loss to minimize: the token mean of
    max(-A ratio, -A clip(ratio, 1 - clip, 1 + clip)). Returns (loss, fraction of tokens clipped)."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip, 1 + clip)
    return masked_mean(torch.maximum(unclipped, clipped), mask), masked_mean((clipped > unclipped).float(), mask)


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor,
               clip: float = 0.2) -> tuple[Tensor, Tensor]:
    """The clipped value loss: 0.5 * token mean of max((V - R)^2, (clip(V, V_old - clip, V_old + clip) - R)^2).
    Returns (loss, fraction of tokens where the clipped term is the larger)."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    a, b = (values - returns) ** 2, (clipped_values - returns) ** 2
    return 0.5 * masked_mean(torch.maximum(a, b), mask), masked_mean((b > a).float(), mask)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of softmax(logits) over the last axis: logsumexp(z) - sum softmax(z) z."""
    return torch.logsumexp(logits, -1) - (torch.softmax(logits, -1) * logits).sum(-1)


@dataclass
class AdaptiveKLController:
    """Ziegler et al. 2019's controller: after each batch, coef *= 1 + clip(KL / target - 1, -0.2, 0.2) *
    n_steps / horizon, so that the KL drifts toward ``target`` over about ``horizon`` samples."""

    value: float
    target: float
    horizon: float

    def update(self, current_kl: float, n_steps: int) -> float:
        error = min(max(current_kl / self.target - 1, -0.2), 0.2)
        self.value *= 1 + error * n_steps / self.horizon
        return self.value
