"""Scaling laws (lab m11's library): fits against the published replication, closed forms against numerical
optimization (scipy), the noise-scale estimators against Monte Carlo, and ``llmlab plan``."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import optimize

from llmlab.scaling import laws, noise, planner, published, zoo
from llmlab.transformer import TransformerConfig, TransformerLM, cross_entropy

LLMLAB = str(Path(sys.executable).with_name("llmlab"))


@pytest.fixture(scope="module")
def points():
    return published.chinchilla_points()


def test_approach3_agrees_with_the_published_replication(points):
    """Besiroglu et al. 2024 (240 points, Huber delta 1e-3): every parameter within their standard error."""
    N, D, L = points
    assert len(N) == 240 and len(published.chinchilla_points(all_points=True)[0]) == 245
    fit = laws.fit_chinchilla(N, D, L, keep=64)
    for k, se in laws.EPOCH_2024_SE.items():
        assert abs(fit[k] - getattr(laws.EPOCH_2024, k)) <= se, (k, fit[k])
    assert abs(laws.ChinchillaFit(**fit).a - 0.5126) < 0.02  # their N_opt ~ C^a


@pytest.mark.slow
def test_bootstrap_standard_errors_match_the_published_ones(points):
    """1000 bootstrap refits give standard errors within a factor 1.6 of Besiroglu et al.'s 4000; the full
    4,500-point grid reaches the same optimum as its 64 best starts."""
    N, D, L = points
    full, pruned = laws.fit_chinchilla(N, D, L), laws.fit_chinchilla(N, D, L, keep=64)
    assert all(abs(full[k] - pruned[k]) <= 1e-4 * abs(full[k]) for k in full)
    start = laws.start_of(laws.ChinchillaFit(**full))
    boot = laws.bootstrap(lambda n, d, l: tuple(laws.fit_chinchilla(n, d, l, starts=start).values()), points, n=1000)
    for (k, se), got in zip(laws.EPOCH_2024_SE.items(), boot["samples"].std(axis=0), strict=True):
        assert se / 1.6 <= got <= se * 1.6, (k, got, se)


def test_objective_and_gradient():
    """The summed Huber objective against a direct formula, and its gradient against finite differences."""
    rng = np.random.default_rng(0)
    N, D = 10 ** rng.uniform(7, 10, 50), 10 ** rng.uniform(8, 11, 50)
    L = laws.EPOCH_2024.loss(N, D) * np.exp(0.02 * rng.standard_normal(50))
    p = np.array([6.0, 7.5, 0.6, 0.35, 0.37])
    pred = np.log(np.exp(p[0] - p[3] * np.log(N)) + np.exp(p[1] - p[4] * np.log(D)) + np.exp(p[2]))
    r = pred - np.log(L)
    want = np.where(np.abs(r) <= 1e-3, r**2 / 2, 1e-3 * (np.abs(r) - 5e-4)).sum()
    assert laws.chinchilla_objective(p, N, D, L) == pytest.approx(want, rel=1e-12)
    grad = laws._objective(p, np.log(N), np.log(D), np.log(L), 1e-3)[1]
    numeric = optimize.approx_fprime(p, lambda q: laws.chinchilla_objective(q, N, D, L), 1e-7)
    assert np.allclose(grad, numeric, rtol=1e-4, atol=1e-8)


def test_compute_optimal_is_the_constrained_minimum():
    """The closed form against scipy's bounded minimization in log N, for both published fits."""
    for fit in (laws.EPOCH_2024, laws.HOFFMANN_2022):
        for C in (1e19, 1e21, 1e24):
            N, D = fit.compute_optimal(C)
            res = optimize.minimize_scalar(lambda x, f=fit, c=C: f.loss(math.exp(x), c / 6 / math.exp(x)),
                                           bounds=(10, math.log(C / 6) - 10), method="bounded",
                                           options={"xatol": 1e-9})
            assert N == pytest.approx(math.exp(res.x), rel=1e-5) and 6 * N * D == pytest.approx(C, rel=1e-12)
    N, _ = laws.EPOCH_2024.compute_optimal(np.array([1e20, 1e22]))
    assert math.log(N[1] / N[0]) / math.log(100) == pytest.approx(laws.EPOCH_2024.a, rel=1e-12)


def test_approach2_on_the_isoflop_runs():
    """Each budget's vertex lies inside its runs; N_opt ~ C^a with a near 0.5; the intervals bracket the
    point predictions; a noiseless parabola's vertex is exact."""
    runs = published.isoflop_runs()
    out = laws.approach2(runs, n_boot=300)
    for c, n in zip(out["budgets"], out["n_opt"], strict=True):
        sizes = [r["parameters"] for r in runs if r["compute_budget"] == c]
        assert min(sizes) < n < max(sizes)
    assert 0.4 < out["a"] < 0.6 and out["a_interval"][0] <= out["a"] <= out["a_interval"][1]
    for p in out["predictions"].values():
        assert p["N_interval"][0] <= p["N_opt"] <= p["N_interval"][1]
    n = np.geomspace(1e8, 1e10, 7)
    assert laws.isoflop_minimum(n, 2 + (np.log(n) - math.log(1e9)) ** 2) == pytest.approx(1e9, rel=1e-9)


def test_noise_scale_estimators_and_batch_norms():
    """The estimators are unbiased (Monte Carlo with a known covariance); batch_gradient_norms' big-batch
    norm is the whole batch's gradient norm (torch), its small-batch norm the mean over slices, and the
    model's .grad is left untouched."""
    rng = np.random.default_rng(1)
    G, sigma_root = rng.standard_normal(6), rng.standard_normal((6, 6))
    g = G + rng.standard_normal((20000, 32, 6)) @ sigma_root.T
    small, big = (g[:, :4].mean(1) ** 2).sum(1), (g.mean(1) ** 2).sum(1)
    est = np.array([noise.noise_scale_estimates(s, b, 4, 32) for s, b in zip(small, big, strict=True)])
    se = est.std(0) / math.sqrt(len(est))
    assert np.all(np.abs(est.mean(0) - [G @ G, np.trace(sigma_root @ sigma_root.T)]) < 4 * se)

    model = TransformerLM(TransformerConfig(20, context=8, d_model=16, n_layers=1, n_heads=2), seed=0)
    x, y = torch.randint(0, 20, (8, 8)), torch.randint(0, 20, (8, 8))
    model.embed.grad = torch.ones_like(model.embed)
    s, b, bs, bb = noise.batch_gradient_norms(model, cross_entropy, x, y, parts=4)
    full = torch.autograd.grad(cross_entropy(model(x), y), list(model.parameters()))
    parts = [torch.autograd.grad(cross_entropy(model(x[i:i + 2]), y[i:i + 2]), list(model.parameters()))
             for i in range(0, 8, 2)]
    assert (bs, bb) == (2, 8) and torch.equal(model.embed.grad, torch.ones_like(model.embed))
    assert b == pytest.approx(sum(float((t.double() ** 2).sum()) for t in full), rel=1e-5)
    assert s == pytest.approx(np.mean([sum(float((t.double() ** 2).sum()) for t in p) for p in parts]), rel=1e-5)
    with pytest.raises(ValueError):
        noise.noise_scale_estimates(1.0, 1.0, 8, 8)


def test_zoo_trains_and_its_envelope_is_the_lowest_curve():
    """A two-model zoo: records at increasing D with finite losses that fall; the L(C) envelope never lies
    above any model's interpolated curve."""
    vocab = 30
    tokens = np.arange(20000) % vocab  # predictable: the loss must fall
    cfg = zoo.ZooConfig(shapes=((16, 1, 2), (32, 1, 2)), steps=30, context=16, batch_size=4, checkpoints=4)
    records = zoo.train_zoo(cfg, tokens, tokens, vocab)
    assert {r["N"] for r in records} == {zoo.non_embedding_params(TransformerLM(TransformerConfig(
        vocab, context=16, d_model=d, n_layers=1, n_heads=2))) for d in (16, 32)}
    for N in {r["N"] for r in records}:
        curve = [r for r in records if r["N"] == N]
        assert [r["D"] for r in curve] == sorted(r["D"] for r in curve) and curve[-1]["val_loss"] < curve[0]["val_loss"]
        assert all(math.isfinite(r["val_loss"]) and r["C"] == 6 * N * r["D"] for r in curve)
    C, best = zoo.envelope(records, "C", 8)
    for N in {r["N"] for r in records}:
        curve = sorted((r["C"], r["val_loss"]) for r in records if r["N"] == N)
        inside = [(c, v) for c, v in zip(C, best, strict=True) if curve[0][0] <= c <= curve[-1][0]]
        assert all(v <= np.interp(math.log(c), np.log([p[0] for p in curve]), [p[1] for p in curve]) + 1e-12
                   for c, v in inside)


def test_llama_params_counts_what_transformer_lm_builds():
    for vocab, d, layers in ((65, 64, 2), (1000, 128, 3), (50, 96, 1)):
        assert planner.llama_params(vocab, d, layers) == TransformerLM(
            TransformerConfig(vocab, d_model=d, n_layers=layers, n_heads=2)).n_params


def test_plan_for_a_budget(points):
    fit = laws.ChinchillaFit(**laws.fit_chinchilla(*points, keep=64))
    p = planner.plan(1e21, fit=fit, points=points, n_boot=50)
    assert 6 * p.N * p.D == pytest.approx(1e21) and 15 < p.tokens_per_param < 30
    assert p.loss_interval[0] <= p.loss <= p.loss_interval[1]
    assert abs(math.log(p.shape["params"] / p.N)) < 0.05 and p.shape["d_model"] % 64 == 0
    by_hours = planner.plan(hours=10, device="a100", fit=fit, points=points, n_boot=10)
    assert by_hours.flops == pytest.approx(10 * 3600 * 312e12 * 0.4)
    for bad in ({"flops": -1.0}, {"flops": 1e21, "hours": 1.0}, {}, {"hours": 1.0, "device": "tpu"}):
        with pytest.raises(ValueError):
            planner.plan(**bad, fit=fit, points=points, n_boot=2)


def test_plan_cli():
    done = subprocess.run([LLMLAB, "plan", "--flops", "1e21", "--json", "--bootstrap", "20"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert 6 * plan["N"] * plan["D"] == pytest.approx(1e21) and plan["shape"]["n_layers"] > 0
    for args in (["--flops", "-1"], ["--flops", "1e21", "--gpu-hours", "2"], ["--gpu-hours", "2", "--gpu", "tpu"]):
        done = subprocess.run([LLMLAB, "plan", *args], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and "error" in done.stderr and "Traceback" not in done.stderr


def test_off_limits_huber_fails_in_the_sandbox():
    """The lab's off-limits cheat: an objective built on scipy.special.huber fails its check in the sandbox
    (OffLimits), and the other checks stand."""
    from llmlab.labs import get_lab
    from llmlab.platform.grading import grade_source

    lab = get_lab("m11")
    source = lab.submission_source() + (
        "from scipy.special import huber as _huber, logsumexp as _lse\nimport numpy as _np\n\n\n"
        "def chinchilla_objective(params, N, D, L, delta=1e-3):\n"
        "    a, b, e, al, be = params\n"
        "    pred = _lse([a - al * _np.log(N), b - be * _np.log(D), _np.full(len(N), e)], axis=0)\n"
        "    return float(_huber(delta, pred - _np.log(L)).sum())\n")
    by = {c.name: c for c in grade_source(lab, source, trusted=True).checks}
    assert not by["huber_objective"].passed and "off limits" in by["huber_objective"].message
    assert by["power_law_fit"].passed and by["compute_optimal_split"].passed
