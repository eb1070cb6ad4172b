"""Lottery tickets (Frankle & Carbin 2019): iterative magnitude pruning (IMP) with rewinding. Train, prune
the smallest-magnitude fraction of each layer's surviving weights, reset the survivors to their values at
initialization (or at an early iterate: Frankle et al. 2020's rewinding) and train again, the pruned weights
held at zero by masks that stay applied through every update."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

Masks = dict[str, Tensor]


class MLP(nn.Module):
    """LeNet-300-100 (Frankle & Carbin's fully connected network) on flattened 32x32x3 images, Glorot-normal
    weights and zero biases as in their setup."""

    def __init__(self, sizes=(3072, 300, 100, 10), seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=False))
        with torch.no_grad():
            for layer in self.layers:
                nn.init.xavier_normal_(layer.weight, generator=gen)
                layer.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)


def prunable(model: nn.Module) -> list[str]:
    """The weight matrices (biases are never pruned)."""
    return [name for name, p in model.named_parameters() if p.dim() >= 2]


def full_masks(model: nn.Module) -> Masks:
    names = set(prunable(model))
    return {name: torch.ones_like(p) for name, p in model.named_parameters() if name in names}


def prune_round(weights: dict[str, Tensor], masks: Masks, fraction: float | dict[str, float]) -> Masks:
    """New masks: in each layer, the ``fraction`` (per layer if a dict) of the *surviving* weights with the
    smallest magnitudes pruned (round(fraction x survivors) of them; ties to the earlier index); pruned weights
    stay pruned."""
    out = {}
    for name, mask in masks.items():
        frac = fraction[name] if isinstance(fraction, dict) else fraction
        alive = mask.flatten().bool()
        idx = torch.nonzero(alive).flatten()
        k = int(round(frac * len(idx)))
        new = mask.flatten().clone()
        if k:
            order = torch.argsort(weights[name].flatten()[idx].abs(), stable=True)
            new[idx[order[:k]]] = 0
        out[name] = new.view_as(mask)
    return out


def rewind(initial: dict[str, Tensor], masks: Masks) -> dict[str, Tensor]:
    """The weights to train next: the initial (or early) values, with the pruned ones zero."""
    return {name: w * masks[name] if name in masks else w.clone() for name, w in initial.items()}


def masked_step(params: dict[str, Tensor], grads: dict[str, Tensor], masks: Masks, lr: float) -> dict[str, Tensor]:
    """One SGD step that keeps the masks applied: θ <- (θ − lr g) ⊙ m for masked tensors, θ − lr g for the rest."""
    return {name: (p - lr * grads[name]) * masks[name] if name in masks else p - lr * grads[name]
            for name, p in params.items()}


def random_masks(masks: Masks, seed: int) -> Masks:
    """Masks with the same number of survivors per layer, placed at random (the random-pruning control)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, mask in masks.items():
        new = torch.zeros(mask.numel())
        new[torch.randperm(mask.numel(), generator=gen)[:int(mask.sum())]] = 1
        out[name] = new.view_as(mask)
    return out


def remaining(masks: Masks) -> float:
    return float(sum(m.sum() for m in masks.values()) / sum(m.numel() for m in masks.values()))


def state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def load(model: nn.Module, weights: dict[str, Tensor]) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(weights[name])


def train(model: nn.Module, masks: Masks, data: dict, epochs: int, lr: float = 1.2e-3, batch: int = 60,
          seed: int = 0, keep_at: int | None = None) -> dict:
    """Adam (Frankle & Carbin's optimizer and rate for LeNet) on data["x_train"], data["y_train"], the masks
    re-applied after every update; test accuracy at the end, and the weights after ``keep_at`` iterations
    (for rewinding) when asked. The fused Adam kernel: one pass over each tensor, where the per-tensor loop of
    torch's default CPU Adam took a third of the time of a step of LeNet-300-100 (950k weights, 60 images)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    params = dict(model.named_parameters())
    gen = torch.Generator().manual_seed(seed)
    x, y = data["x_train"], data["y_train"]
    kept, step, losses = None, 0, []
    with torch.no_grad():
        for name, m in masks.items():
            params[name].mul_(m)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(batch):
            if step == keep_at:
                kept = state(model)
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                for name, m in masks.items():
                    params[name].mul_(m)
            losses.append(loss.item())
            step += 1
    return {"accuracy": accuracy(model, data["x_test"], data["y_test"]), "final_loss": float(np.mean(losses[-20:])),
            "steps": step, "kept": kept}


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    return float((model(x).argmax(-1) == y).float().mean())


def cifar(train_n: int | None = None, seed: int = 0) -> dict:
    """CIFAR-tiny flattened and standardized per channel (train statistics): 5,000 train and 10,000 test
    images (``train_n`` of the train images at random)."""
    from llmlab.data import cifar as data

    xtr, ytr = data.load("train")
    xte, yte = data.load("test")
    if train_n is not None:
        keep = np.random.default_rng(seed).permutation(len(xtr))[:train_n]
        xtr, ytr = xtr[keep], ytr[keep]
    mean, std = xtr.reshape(-1, 3).mean(0) / 255, xtr.reshape(-1, 3).std(0) / 255

    def prep(x):
        return torch.tensor(((x / 255 - mean) / std).reshape(len(x), -1), dtype=torch.float32)

    return {"x_train": prep(xtr), "y_train": torch.tensor(ytr), "x_test": prep(xte), "y_test": torch.tensor(yte)}
