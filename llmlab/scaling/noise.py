"""The gradient noise scale (McCandlish et al. 2018, "An Empirical Model of Large-Batch Training").

With per-example gradient covariance Sigma and true gradient G, a batch of B examples has
E|G_B|^2 = |G|^2 + tr(Sigma) / B. Two batch sizes give unbiased estimates of both terms (their Appendix A):

    |G|^2     ~ (B_big |G_big|^2 - B_small |G_small|^2) / (B_big - B_small)
    tr(Sigma) ~ (|G_small|^2 - |G_big|^2) / (1/B_small - 1/B_big)

and the simple noise scale B_simple = tr(Sigma) / |G|^2 is the batch size beyond which larger batches stop
paying off. Single estimates are noisy; the paper takes the ratio of their moving averages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where gradients are taken: `llmlab plan` needs none of it
    import torch


def noise_scale_estimates(g_small_sq: float, g_big_sq: float, b_small: float, b_big: float) -> tuple[float, float]:
    """Unbiased (|G|^2, tr Sigma) from the squared norms of gradients over batches of b_small and b_big."""
    if not b_big > b_small > 0:
        raise ValueError("need 0 < b_small < b_big")
    g2 = (b_big * g_big_sq - b_small * g_small_sq) / (b_big - b_small)
    trace = (g_small_sq - g_big_sq) / (1 / b_small - 1 / b_big)
    return float(g2), float(trace)


def batch_gradient_norms(model: torch.nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor,
                         parts: int = 4) -> tuple[float, float, int, int]:
    """Squared gradient norms for one batch split into ``parts`` equal slices: (mean over slices of
    |G_small|^2, |G_big|^2 of the whole batch, b_small, b_big). The model's .grad is left as it was."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    saved = [None if p.grad is None else p.grad.clone() for p in params]
    b = x.shape[0] - x.shape[0] % parts
    size = b // parts
    total, small_sq = [torch.zeros_like(p) for p in params], 0.0
    for i in range(parts):
        grads = torch.autograd.grad(loss_fn(model(x[i * size:(i + 1) * size]), y[i * size:(i + 1) * size]), params)
        small_sq += sum(float((g.double() ** 2).sum()) for g in grads) / parts
        for t, g in zip(total, grads, strict=True):
            t += g / parts
    big_sq = sum(float((t.double() ** 2).sum()) for t in total)
    for p, g in zip(params, saved, strict=True):
        p.grad = g
    return small_sq, big_sq, size, b


class NoiseScale:
    """B_simple along training: the ratio of exponential moving averages of the two unbiased estimates."""

    def __init__(self, decay: float = 0.9):
        self.decay, self.g2, self.trace = decay, None, None

    def update(self, g_small_sq: float, g_big_sq: float, b_small: float, b_big: float) -> float:
        g2, trace = noise_scale_estimates(g_small_sq, g_big_sq, b_small, b_big)
        d = self.decay
        self.g2 = g2 if self.g2 is None else d * self.g2 + (1 - d) * g2
        self.trace = trace if self.trace is None else d * self.trace + (1 - d) * trace
        return self.b_simple

    @property
    def b_simple(self) -> float:
        return self.trace / self.g2 if self.g2 else float("nan")
