"""Lab m15's library against independent references: the NTK against torch.autograd.functional's Jacobians,
the spectral densities against numerical integration and large random matrices, the power-law exponent
against SciPy's Pareto maximum likelihood, magnitude pruning against torch.nn.utils.prune."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import torch
from torch.nn.utils import prune

from llmlab.representation import lottery, ntk, rmt


def _brute_force_ntk(model, x1, x2):
    """Θ[i, j, a, b] from full Jacobians by torch.autograd.functional.jacobian, one example at a time."""
    names = [n for n, _ in model.named_parameters()]
    values = tuple(p.detach() for p in model.parameters())

    def jac(x):
        def out(*ps):
            return torch.func.functional_call(model, dict(zip(names, ps, strict=True)), (x[None],)).reshape(-1)
        js = torch.autograd.functional.jacobian(out, values)
        return torch.cat([j.reshape(j.shape[0], -1) for j in js], 1)

    j1, j2 = [jac(x) for x in x1], [jac(x) for x in x2]
    return torch.stack([torch.stack([a @ b.T for b in j2]) for a in j1])


@pytest.mark.parametrize("net", ["mlp", "transformer"])
def test_ntk_two_ways_equal_full_jacobians(net):
    torch.manual_seed(0)
    if net == "mlp":  # three outputs, two hidden layers: the kernel is not symmetric in its outputs
        model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 5), torch.nn.Tanh(),
                                    torch.nn.Linear(5, 3)).double()
        x1, x2 = torch.randn(4, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    else:
        model = ntk.OneLayerTransformer(vocab=11, d_model=8, context=6, seed=1).double()
        x1, x2 = torch.randint(0, 11, (4, 6)), torch.randint(0, 11, (3, 6))
    f, params = ntk.functional(model)
    want = _brute_force_ntk(model, x1, x2)
    by_jacobians = ntk.ntk_jacobian(f, params, x1, x2)
    by_products = ntk.ntk_vector_products(f, params, x1, x2)
    assert by_jacobians.shape == want.shape == (4, 3) + (want.shape[-1],) * 2
    torch.testing.assert_close(by_jacobians, want, rtol=0, atol=1e-12 * float(want.abs().max()))
    torch.testing.assert_close(by_products, want, rtol=0, atol=1e-12 * float(want.abs().max()))
    if net == "mlp":
        assert (want - want.transpose(2, 3)).abs().max() > 1e-3  # a swap of outputs would be seen


def test_kernel_is_symmetric_positive_semidefinite_and_moves_with_training():
    model = ntk.OneLayerTransformer(vocab=9, d_model=16, context=8, seed=0).double()
    x = torch.randint(0, 9, (10, 8))
    k0 = ntk.kernel(model, x)
    lam = ntk.spectrum(k0)
    assert torch.allclose(k0, k0.T, atol=1e-10) and lam[-1] > -1e-8 * lam[0] and bool((lam[:-1] >= lam[1:]).all())
    assert ntk.relative_change(k0, k0) == 0
    with torch.no_grad():
        model.head.mul_(2)  # the read-out doubled: the head's own block is unchanged, the rest scales by 4
    assert 0.5 < ntk.relative_change(k0, ntk.kernel(model, x)) < 3


@pytest.mark.parametrize("q, sigma2", [(0.1, 1.0), (0.5, 2.5), (1.0, 0.3)])
def test_marchenko_pastur_is_a_density_and_the_law_of_gaussian_matrices(q, sigma2):
    lo, hi = rmt.mp_edges(q, sigma2)
    mass = scipy.integrate.quad(lambda x: rmt.marchenko_pastur_pdf(x, q, sigma2), lo, hi, limit=400)[0]
    assert mass == pytest.approx(1, abs=1e-7)
    assert rmt.marchenko_pastur_pdf([lo - 0.1, hi + 0.1], q, sigma2).tolist() == [0, 0]
    mid = lo + 0.37 * (hi - lo)
    assert rmt.marchenko_pastur_cdf(mid, q, sigma2) == pytest.approx(
        scipy.integrate.quad(lambda x: rmt.marchenko_pastur_pdf(x, q, sigma2), lo, mid, limit=400)[0], abs=1e-5)
    w = np.random.default_rng(0).standard_normal((2000, int(2000 * q))) * np.sqrt(sigma2)
    assert rmt.ks_distance(rmt.esd(w), lambda t: rmt.marchenko_pastur_cdf(t, q, sigma2)) < 0.02


def test_wigner_semicircle():
    xs = np.array([-2.0, -1.3, 0.0, 0.4, 2.0])
    want = [scipy.integrate.quad(rmt.wigner_pdf, -2, x)[0] for x in xs]
    assert np.allclose(rmt.wigner_cdf(xs), want, atol=1e-10)
    eigs = np.linalg.eigvalsh(rmt.goe(1500, np.random.default_rng(1)))
    assert rmt.ks_distance(eigs, rmt.wigner_cdf) < 0.02
    assert rmt.ks_distance(eigs * 1.3, rmt.wigner_cdf) > 0.05  # a wrong scale is seen


def test_power_law_exponent_is_scipys_pareto_fit():
    x = scipy.stats.pareto.rvs(2.2, scale=1.5, size=4000, random_state=3)  # density ∝ x^-3.2
    below = np.random.default_rng(0).uniform(0, 1.5, 500)
    shape = scipy.stats.pareto.fit(x, floc=0, fscale=1.5)[0]
    assert rmt.power_law_alpha(np.concatenate([x, below]), 1.5) == pytest.approx(1 + shape, abs=1e-10)
    fit = rmt.fit_power_law(np.concatenate([x, below]))
    assert fit["alpha"] == pytest.approx(3.2, abs=0.15) and fit["xmin"] >= 1.3


def test_magnitude_pruning_rounds_equal_torch_prune():
    """Two rounds of 20% by |w| per layer: torch.nn.utils.prune.l1_unstructured applied twice (its pruning
    container takes the amount from the surviving weights, as a round of IMP does)."""
    net = lottery.MLP(sizes=(20, 12, 7, 3), seed=0)
    weights, masks = lottery.state(net), lottery.full_masks(net)
    for _ in range(2):
        masks = lottery.prune_round(weights, masks, 0.2)
        for layer in net.layers:
            prune.l1_unstructured(layer, "weight", amount=0.2)
    for i, layer in enumerate(net.layers):
        assert torch.equal(masks[f"layers.{i}.weight"], layer.weight_mask)
    assert lottery.remaining(masks) == pytest.approx(0.64, abs=0.01)


def test_pruning_rounds_prune_only_survivors_and_rates_per_layer():
    torch.manual_seed(0)
    weights = {"a": torch.randn(10, 10), "b": torch.randn(5, 4)}
    masks = {"a": (torch.rand(10, 10) < 0.5).float(), "b": torch.ones(5, 4)}
    new = lottery.prune_round(weights, masks, {"a": 0.5, "b": 0.25})
    for name, frac in (("a", 0.5), ("b", 0.25)):
        alive = int(masks[name].sum())
        assert int(new[name].sum()) == alive - round(frac * alive)
        assert bool((new[name] <= masks[name]).all())  # pruned stays pruned
        kept = weights[name][new[name].bool()].abs()
        cut = weights[name][(masks[name] - new[name]).bool()].abs()
        assert kept.min() >= cut.max()


def test_masks_stay_applied_through_training_and_steps():
    data = {"x_train": torch.randn(120, 20), "y_train": torch.randint(0, 3, (120,)),
            "x_test": torch.randn(30, 20), "y_test": torch.randint(0, 3, (30,))}
    net = lottery.MLP(sizes=(20, 12, 3), seed=0)
    masks = lottery.prune_round(lottery.state(net), lottery.full_masks(net), 0.6)
    res = lottery.train(net, masks, data, epochs=2, batch=20, keep_at=3)
    after = lottery.state(net)
    assert all(float(after[k][m == 0].abs().max()) == 0 for k, m in masks.items())
    assert res["steps"] == 12 and res["kept"] is not None and 0 <= res["accuracy"] <= 1
    params = {k: torch.randn_like(v) for k, v in after.items()}
    stepped = lottery.masked_step(params, {k: torch.randn_like(v) for k, v in params.items()}, masks, 0.1)
    assert all(float(stepped[k][m == 0].abs().max()) == 0 for k, m in masks.items())
    shuffled = lottery.random_masks(masks, seed=1)
    assert all(int(shuffled[k].sum()) == int(m.sum()) and not torch.equal(shuffled[k], m) for k, m in masks.items())
