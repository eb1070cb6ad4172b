"""DP-SGD (Abadi et al. 2016): per-example gradients (``torch.func``: ``vmap`` of ``grad``), each clipped to
L2 norm ``clip``, summed, Gaussian noise of standard deviation ``noise * clip`` added, divided by the
expected batch size; batches are Poisson samples of the data (each example with probability
``sample_rate``), as the accountant (``llmlab.privacy.accountant``) assumes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap


def per_sample_grads(model: nn.Module, loss_fn, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Each example's gradient of ``loss_fn(model(x_i), y_i)``: {parameter name: (B, *shape)}."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss_one(p, xi, yi):
        out = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return loss_fn(out, yi.unsqueeze(0))

    return vmap(grad(loss_one), in_dims=(None, 0, 0))(params, x, y)


def clip_per_sample(grads: dict[str, Tensor], clip: float) -> tuple[dict[str, Tensor], Tensor]:
    """Scale each example's whole gradient (all parameters together) to L2 norm at most ``clip``; returns
    the clipped gradients and the norms before clipping."""
    norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads.values()))
    factor = torch.clamp(clip / (norms + 1e-6), max=1.0)
    return {k: g * factor.view(-1, *([1] * (g.dim() - 1))) for k, g in grads.items()}, norms


@dataclass
class DPSGD:
    """One private step: ``step(model, loss_fn, x, y)`` sets each parameter's .grad to the noisy mean of
    clipped per-example gradients (then call the optimizer's step)."""

    clip: float
    noise: float
    expected_batch: float  # sample_rate * dataset size: the denominator, so that the noise does not leak |B|
    generator: torch.Generator | None = None

    def step(self, model: nn.Module, loss_fn, x: Tensor, y: Tensor) -> Tensor:
        """Returns the per-example norms before clipping."""
        clipped, norms = clip_per_sample(per_sample_grads(model, loss_fn, x, y), self.clip) if len(x) else ({}, x[:0])
        for name, p in model.named_parameters():
            total = clipped[name].sum(0) if name in clipped else torch.zeros_like(p)
            noise = torch.randn(p.shape, generator=self.generator, dtype=p.dtype) * self.noise * self.clip
            p.grad = (total + noise) / self.expected_batch
        return norms


def poisson_batch(n: int, sample_rate: float, generator: torch.Generator | None = None) -> Tensor:
    """Indices of a Poisson sample: each of ``n`` examples independently with probability ``sample_rate``."""
    return torch.nonzero(torch.rand(n, generator=generator) < sample_rate).squeeze(1)
