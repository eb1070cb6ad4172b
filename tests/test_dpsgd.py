"""DP-SGD's pieces: per-example gradients (torch.func) against one backward pass per example and against
Opacus's GradSampleModule (a test-only dependency), per-example clipping, and the noisy step's mean and
noise scale."""

from __future__ import annotations

import torch
from torch import nn

from llmlab.privacy import dpsgd


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def _data(n=12):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def test_per_sample_grads_equal_one_backward_each_and_opacus():
    from opacus import GradSampleModule

    model, (x, y) = _model(), _data()
    loss_fn = nn.functional.cross_entropy
    ours = dpsgd.per_sample_grads(model, loss_fn, x, y)
    for i in range(len(x)):
        model.zero_grad()
        loss_fn(model(x[i:i + 1]), y[i:i + 1]).backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(ours[name][i], p.grad, atol=1e-12, rtol=0)
    gsm = GradSampleModule(_model(), loss_reduction="sum")
    nn.functional.cross_entropy(gsm(x), y, reduction="sum").backward()
    for (name, _), p in zip(model.named_parameters(), gsm._module.parameters(), strict=True):
        torch.testing.assert_close(ours[name], p.grad_sample, atol=1e-10, rtol=0)


def test_clipping_and_the_noisy_step():
    model, (x, y) = _model(), _data(64)
    grads = dpsgd.per_sample_grads(model, nn.functional.cross_entropy, x, y)
    clip = float(torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads.values())).median())  # half are clipped
    clipped, norms = dpsgd.clip_per_sample(grads, clip)
    after = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in clipped.values()))
    assert (after <= clip * (1 + 1e-9)).all() and (after[norms < clip] - norms[norms < clip]).abs().max() < 1e-12
    # without noise the step is the sum of clipped gradients over the expected batch size
    dpsgd.DPSGD(clip, 0.0, expected_batch=50.0).step(model, nn.functional.cross_entropy, x, y)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, clipped[name].sum(0) / 50.0, atol=1e-12, rtol=0)
    # with noise: the noise on each coordinate has standard deviation noise * clip / expected batch
    gen, noise = torch.Generator().manual_seed(3), 1.3
    draws = []
    for _ in range(200):
        dpsgd.DPSGD(clip, noise, expected_batch=50.0, generator=gen).step(model, nn.functional.cross_entropy, x, y)
        draws.append(torch.cat([(p.grad - clipped[n].sum(0) / 50.0).flatten() for n, p in model.named_parameters()]))
    std = float(torch.stack(draws).std())
    assert abs(std / (noise * clip / 50.0) - 1) < 0.03  # 200 x 83 draws: the standard error is about 0.5%
    idx = dpsgd.poisson_batch(100_000, 0.01, torch.Generator().manual_seed(0))
    assert abs(len(idx) - 1000) < 4 * (100_000 * 0.01 * 0.99) ** 0.5


def test_privacy_utility_sweep_on_the_toxicity_classifier(tmp_path):
    """DP-SGD training a small model end to end (llmlab.privacy.experiment): the non-private run ranks held-out
    tweets well (AUC > 0.95); epsilon is the accountant's for the run's own rate and steps; more noise, smaller
    epsilon and lower AUC; a rerun with the same seed gives the same model; the plot is written."""
    from llmlab.privacy import accountant, experiment

    cfg = experiment.DPConfig(hidden=16, epochs=1.0, noises=(0.7, 4.0))
    data = experiment.load(cfg)
    rows = experiment.sweep(cfg, data, progress=False)
    public, low, high = rows
    assert public["noise"] is None and public["auc"] > 0.95 and public["epsilon"] == float("inf")
    assert low["epsilon"] == accountant.epsilon(0.7, low["sample_rate"], low["steps"], cfg.delta)[0]
    assert low["sample_rate"] == cfg.expected_batch / data["x_train"].shape[0] and low["steps"] == 78
    assert low["epsilon"] > high["epsilon"] and low["auc"] > high["auc"] and 0 < low["clipped_fraction"] < 1
    assert experiment.train(cfg, data, 4.0)["auc"] == high["auc"]
    experiment.plot(rows, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
