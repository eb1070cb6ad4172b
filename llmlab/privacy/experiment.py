"""Privacy against utility: DP-SGD training a small model, at several noise multipliers.

The model is a two-layer network over the toxicity classifier's hashed features (``llmlab.pipeline.toxicity``:
word and character n-grams, here hashed into 2,048 buckets, log(1 + count)), trained on 80% of Davidson et
al.'s tweets (toxic or not) and scored on the rest by ROC AUC and accuracy. Each private run uses Poisson
batches, per-example clipping and Gaussian noise (``llmlab.privacy.dpsgd``) and reports the epsilon the
RDP accountant gives for its sampling rate, steps and delta; the non-private run takes the same batches with
neither clipping nor noise. Every run of a sweep starts from the same weights and sees the same data order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from llmlab.privacy import accountant
from llmlab.privacy.dpsgd import DPSGD, poisson_batch


@dataclass(frozen=True)
class DPConfig:
    buckets: int = 2048
    hidden: int = 32
    epochs: float = 3.0
    expected_batch: int = 256
    lr: float = 1e-2  # Adam (post-processing of the private gradients: no privacy cost); 2e-3 costs DP runs
    # 0.2 AUC at epsilon 3.7 (quick profile), not the non-private run
    clip: float = 1.0
    delta: float = 1e-5  # below 1 / (training examples)
    noises: tuple[float, ...] = (0.6, 0.8, 1.2, 2.0, 4.0)
    test_fraction: float = 0.2
    seed: int = 0


def load(cfg: DPConfig, path=None) -> dict:
    """Features (sparse, log1p counts) and labels, split as ``toxicity.train_and_evaluate`` splits."""
    from llmlab.pipeline import toxicity

    texts, labels = toxicity.load_davidson(path)
    x = toxicity.matrix(texts, cfg.buckets).log1p().tocsr().astype(np.float32)
    test, train = toxicity.split(len(texts), cfg.test_fraction, cfg.seed)
    return {"x_train": x[train], "y_train": labels[train], "x_test": x[test], "y_test": labels[test]}


def _loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.binary_cross_entropy_with_logits(out.squeeze(-1), y.float())


def train(cfg: DPConfig, data: dict, noise: float | None, progress: bool = False) -> dict:
    """One run: DP-SGD with noise multiplier ``noise`` (None: no privacy). Returns the held-out AUC and
    accuracy, the steps, the sampling rate and epsilon (inf without privacy)."""
    from llmlab.pipeline.toxicity import roc_auc

    torch.manual_seed(cfg.seed)
    model = nn.Sequential(nn.Linear(cfg.buckets, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, 1))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    x, y = data["x_train"], torch.from_numpy(data["y_train"])
    n = x.shape[0]
    q = cfg.expected_batch / n
    steps = math.ceil(cfg.epochs / q)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    dp = DPSGD(cfg.clip, noise, cfg.expected_batch, generator=torch.Generator().manual_seed(cfg.seed + 2)) \
        if noise is not None else None
    clipped = []
    for _ in tqdm(range(steps), desc=f"DP-SGD noise {noise}", disable=not progress, mininterval=2, leave=False):
        idx = poisson_batch(n, q, gen).numpy()
        xb, yb = torch.from_numpy(x[idx].toarray()), y[idx]
        opt.zero_grad(set_to_none=True)
        if dp is not None:
            norms = dp.step(model, _loss, xb, yb)
            clipped.append(float((norms > cfg.clip).float().mean()) if len(norms) else 0.0)
        elif len(idx):
            _loss(model(xb), yb).backward()
        opt.step()
    with torch.no_grad():
        scores = torch.sigmoid(model(torch.from_numpy(data["x_test"].toarray())).squeeze(-1)).numpy()
    eps = accountant.epsilon(noise, q, steps, cfg.delta)[0] if noise is not None else math.inf
    return {"noise": noise, "epsilon": eps, "delta": cfg.delta, "steps": steps, "sample_rate": q,
            "auc": roc_auc(scores, data["y_test"]), "accuracy": float(((scores >= 0.5) == data["y_test"]).mean()),
            "clipped_fraction": float(np.mean(clipped)) if clipped else 0.0,
            "majority_accuracy": float(max(data["y_test"].mean(), 1 - data["y_test"].mean()))}


def sweep(cfg: DPConfig, data: dict | None = None, progress: bool = True) -> list[dict]:
    """The non-private run, then one per noise multiplier (most private last)."""
    data = data or load(cfg)
    return [train(cfg, data, noise, progress) for noise in (None, *sorted(cfg.noises))]


def plot(rows: list[dict], path, title: str = "DP-SGD: privacy against utility") -> None:
    """Held-out AUC and accuracy against epsilon (log scale), the non-private run as a line."""
    from matplotlib.ticker import NullFormatter

    from llmlab.plots import figure

    private = [r for r in rows if r["noise"] is not None]
    public = next(r for r in rows if r["noise"] is None)
    with figure(path, title, ncols=2) as axes:
        for ax, key, label in zip(axes, ("auc", "accuracy"), ("held-out ROC AUC", "held-out accuracy"), strict=True):
            ax.plot([r["epsilon"] for r in private], [r[key] for r in private], "o-", label="DP-SGD")
            for r in private:
                ax.annotate(f"sigma={r['noise']:g}", (r["epsilon"], r[key]), fontsize=7, xytext=(3, -9),
                            textcoords="offset points")
            ax.axhline(public[key], color="gray", ls="--", lw=1, label="no privacy")
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a short log axis overlap
            ax.set_xlabel(f"epsilon (delta = {public['delta']:g})")
            ax.set_title(label, fontsize=10)
            ax.legend(fontsize=8)
