"""Lab m15: advanced representation theory. The empirical neural tangent kernel with torch.func, the
Marchenko-Pastur density and a power-law tail's exponent, and one round of iterative magnitude pruning with
masks that stay applied and rewinding; the deliverable computes a one-layer transformer's NTK spectrum and how
far it moves as the width grows, sets weight spectra against Marchenko-Pastur and Wigner, and finds lottery
tickets on CIFAR-tiny against random re-initialization and random pruning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from llmlab.labs.base import CheckContext, Lab, LabLimits
from llmlab.representation import lottery, ntk, rmt

LAB = Lab("m15", module=__name__, reference="llmlab.representation.lottery",
          spec=["llmlab.representation.ntk:ntk_jacobian", "llmlab.representation.rmt:marchenko_pastur_pdf",
                "llmlab.representation.rmt:power_law_alpha", "prune_round", "rewind", "masked_step"],
          limits=LabLimits(call_timeout_s=60, total_timeout_s=240, memory_mb=2048),
          own_work="the empirical NTK (torch.func or autograd), the Marchenko-Pastur density, the power-law "
                   "maximum-likelihood exponent, magnitude pruning, rewinding and the masked update, from torch "
                   "and numpy",
          forbidden=("powerlaw", "torch.nn.utils.prune"))


# --- networks the NTK checks differentiate (module level: probes run them in the learner's process) ---------
def mlp(params: dict, x: torch.Tensor) -> torch.Tensor:
    """One example x (d,) -> outputs (O,): W3 tanh(W2 tanh(W1 x + b1)) + b3 (two hidden layers: with one, the
    kernel is symmetric in its two outputs and a swap of them would go unseen)."""
    return params["w3"] @ torch.tanh(params["w2"] @ torch.tanh(params["w1"] @ x + params["b1"])) + params["b3"]


def attention_net(params: dict, x: torch.Tensor) -> torch.Tensor:
    """One sequence x (T, d) -> (1,): a one-layer transformer in miniature: causal single-head attention with a
    residual, a tanh MLP with a residual, the mean over positions read out by a vector."""
    q, k, v = x @ params["wq"].T, x @ params["wk"].T, x @ params["wv"].T
    scores = q @ k.T / k.shape[-1] ** 0.5
    causal = torch.ones(len(x), len(x), dtype=torch.bool).tril()
    h = x + torch.softmax(scores.masked_fill(~causal, float("-inf")), -1) @ v @ params["wo"].T
    h = h + torch.tanh(h @ params["w1"].T) @ params["w2"].T
    return (h.mean(0) @ params["head"]).reshape(1)


def probe_ntk(sub, net: str, params: dict, x1: torch.Tensor, x2: torch.Tensor):
    """In the learner's process: their NTK of one of the networks above."""
    return sub.ntk_jacobian({"mlp": mlp, "attention": attention_net}[net], params, x1, x2)


def _array(value):
    """An array result as a tensor for ctx.close (numpy float64 arrays accepted, never float32)."""
    return torch.from_numpy(value) if isinstance(value, np.ndarray) and value.dtype != object else value


@LAB.check(points=3, grades="NTK spectrum of a one-layer transformer")
def ntk_of_networks(ctx: CheckContext):
    """ntk_jacobian(f, params, x1, x2): Θ (N1, N2, O, O) with Θ[i, j, a, b] = Σ over every parameter tensor
    in ``params`` (a dict) of ∂f_a(x1_i)/∂θ · ∂f_b(x2_j)/∂θ, where f(params, x) gives one example's outputs
    (O,). Tanh networks of two hidden layers with 1-4 outputs and a miniature one-layer transformer (causal attention,
    MLP, mean read-out) on sequences, float64 (1e-8 relative to the kernel's largest entry)."""
    for trial in range(4):
        if trial < 3:
            d, h, o = ctx.randint(2, 6), ctx.randint(3, 9), [1, 3, ctx.randint(2, 5)][trial]
            params = {"w1": ctx.randn(h, d), "b1": ctx.randn(h), "w2": ctx.randn(h, h) / h ** 0.5,
                      "w3": ctx.randn(o, h) / h ** 0.5, "b3": ctx.randn(o)}
            x1, x2, net = ctx.randn(ctx.randint(2, 6), d), ctx.randn(ctx.randint(1, 5), d), "mlp"
        else:
            d, f, t = ctx.randint(3, 6), ctx.randint(4, 9), ctx.randint(3, 7)
            params = {name: ctx.randn(*shape) / shape[-1] ** 0.5 for name, shape in
                      (("wq", (d, d)), ("wk", (d, d)), ("wv", (d, d)), ("wo", (d, d)), ("w1", (f, d)),
                       ("w2", (d, f)), ("head", (d,)))}
            x1, x2, net = ctx.randn(ctx.randint(2, 5), t, d), ctx.randn(ctx.randint(2, 4), t, d), "attention"
        fn = {"mlp": mlp, "attention": attention_net}[net]
        want = ntk.ntk_jacobian(fn, params, x1, x2)
        got = ctx.run(probe_ntk, net, params, x1, x2)
        scale = float(want.abs().max())
        ctx.close(_array(got), want, atol=1e-8 * scale, what=f"the NTK of the {net} network "
                  f"({len(x1)} x {len(x2)} examples, {want.shape[-1]} outputs)")


@LAB.check(points=2, grades="random-matrix spectra")
def marchenko_pastur_density(ctx: CheckContext):
    """marchenko_pastur_pdf(x, q, sigma2): the density of the eigenvalues of WᵀW / n for W (n, p) with i.i.d.
    entries of variance σ², p / n -> q in (0, 1]: √((λ+ − x)(x − λ-)) / (2π σ² q x) between λ± = σ²(1 ± √q)²,
    0 outside; x an array, the result an array of its shape (float64, 1e-10)."""
    for _ in range(5):
        q, sigma2 = ctx.choice([ctx.rng.uniform(0.02, 0.99), 1.0, 0.25]), ctx.rng.uniform(0.1, 3.0)
        lo, hi = rmt.mp_edges(q, sigma2)
        x = np.concatenate([ctx.rng.uniform(lo, hi, 12), ctx.rng.uniform(hi, 2 * hi + 1, 3),
                            ctx.rng.uniform(0, lo, 2) if lo > 0 else [0.5 * hi], [-0.5]])
        got = ctx.call("marchenko_pastur_pdf", x, q, sigma2)
        ctx.close(_array(got), torch.from_numpy(rmt.marchenko_pastur_pdf(x, q, sigma2)), atol=1e-10,
                  what=f"the density at q={q:.3f}, σ²={sigma2:.3f}")


@LAB.check(points=2, grades="random-matrix spectra")
def power_law_exponent(ctx: CheckContext):
    """power_law_alpha(x, xmin): the maximum-likelihood exponent of a continuous power law p(x) ∝ x^-α on the
    samples at or above xmin (Clauset, Shalizi & Newman 2009): α = 1 + n / Σ ln(x_i / xmin); samples below
    xmin are ignored (1e-10)."""
    for _ in range(4):
        alpha, xmin = ctx.rng.uniform(1.5, 6.0), ctx.rng.uniform(0.1, 5.0)
        tail = xmin * (1 - ctx.rng.uniform(size=ctx.randint(30, 300))) ** (-1 / (alpha - 1))
        x = ctx.rng.permutation(np.concatenate([tail, ctx.rng.uniform(0, xmin, ctx.randint(0, 50))]))
        got = ctx.number(ctx.call("power_law_alpha", x, xmin), "alpha")
        ctx.close(got, rmt.power_law_alpha(x, xmin), atol=1e-10, what=f"α of {len(tail)} tail samples")


def _layers(ctx: CheckContext, survived: float):
    """Weights and current masks of 2-3 layers (the pruned weights hold values too: pruning looks at
    survivors only)."""
    weights, masks = {}, {}
    for i in range(ctx.randint(2, 4)):
        shape = (ctx.randint(3, 12), ctx.randint(3, 12))
        weights[f"layer{i}.weight"] = ctx.randn(*shape) * ctx.rng.uniform(0.1, 3.0)
        masks[f"layer{i}.weight"] = (torch.rand(shape, generator=ctx.gen) < survived).to(torch.float64)
    return weights, masks


@LAB.check(points=3, grades="lottery tickets")
def magnitude_pruning_round(ctx: CheckContext):
    """prune_round(weights, masks, fraction): new masks (same dtype) where, in each layer separately,
    round(fraction x survivors) of the surviving weights (mask 1) with the smallest |w| are pruned (set to 0);
    already-pruned weights stay pruned whatever their values. ``fraction`` a float, or a dict per layer."""
    for trial in range(5):
        weights, masks = _layers(ctx, [1.0, 0.8, 0.5][trial % 3])
        fraction = ctx.rng.uniform(0.1, 0.5) if trial % 2 else {k: ctx.rng.uniform(0.05, 0.5) for k in weights}
        want = lottery.prune_round(weights, masks, fraction)
        got = ctx.call("prune_round", weights, masks, fraction)
        ctx.expect(isinstance(got, dict) and set(got) == set(want), f"expected a dict of masks for {sorted(want)}")
        for name in want:
            ctx.close(_array(got[name]), want[name], atol=0, what=f"trial {trial}: the new mask of {name}")


@LAB.check(points=3, grades="lottery-ticket pruning to 20% and retraining")
def rewind_and_masked_updates(ctx: CheckContext):
    """rewind(initial, masks): the initial weights with the pruned ones zeroed (tensors without a mask
    unchanged). masked_step(params, grads, masks, lr): one SGD step after which the masks still hold,
    θ <- (θ − lr g) ⊙ m, and θ − lr g for tensors without a mask; the masks stay applied over several steps
    whatever the gradients at pruned weights (1e-12)."""
    weights, masks = _layers(ctx, 0.6)
    initial = {**{k: ctx.randn(*w.shape) for k, w in weights.items()}, "layer0.bias": ctx.randn(4)}
    got = ctx.call("rewind", initial, masks)
    want = lottery.rewind(initial, masks)
    ctx.expect(isinstance(got, dict) and set(got) == set(want), f"rewind should return a dict for {sorted(want)}")
    for name in want:
        ctx.close(_array(got[name]), want[name], atol=1e-12, what=f"rewound {name}")
    params, ours = dict(initial), dict(initial)  # unmasked at first: the step must apply the masks itself
    for step in range(3):
        grads = {k: ctx.randn(*p.shape) for k, p in params.items()}
        lr = ctx.rng.uniform(0.01, 0.5)
        got = ctx.call("masked_step", params, grads, masks, lr)
        ours = lottery.masked_step(ours, grads, masks, lr)
        ctx.expect(isinstance(got, dict) and set(got) == set(ours), "masked_step should return a dict of tensors")
        for name in ours:
            ctx.close(_array(got[name]), ours[name], atol=1e-12, what=f"step {step + 1}: {name}")
        params = got


# --- seeded bugs ---------------------------------------------------------------------------------------------
def ntk_of_summed_outputs(f, params, x1, x2, chunk=None):
    """The kernel of Σ_a f_a, copied to every pair of outputs: right only for one output."""
    k = ntk.ntk_jacobian(lambda p, x: f(p, x).sum().reshape(1), params, x1, x2)
    o = f(params, x1[0]).numel()
    return k.expand(-1, -1, o, o).clone()


def ntk_without_biases(f, params, x1, x2, chunk=None):
    """Differentiates the matrices only (the vectors held constant)."""
    mats = {k: v for k, v in params.items() if v.dim() >= 2}
    rest = {k: v for k, v in params.items() if v.dim() < 2}
    return ntk.ntk_jacobian(lambda p, x: f({**p, **rest}, x), mats, x1, x2)


def ntk_outputs_swapped(f, params, x1, x2, chunk=None):
    return ntk.ntk_jacobian(f, params, x1, x2).transpose(2, 3).contiguous()


def mp_edges_without_root(x, q, sigma2=1.0):
    x = np.asarray(x, dtype=np.float64)
    lo, hi = sigma2 * (1 - q) ** 2, sigma2 * (1 + q) ** 2
    inside = (x > lo) & (x < hi)
    safe = np.where(inside, x, 1.0)
    return np.where(inside, np.sqrt(np.clip((hi - safe) * (safe - lo), 0, None)) / (2 * np.pi * sigma2 * q * safe), 0.0)


def mp_without_q(x, q, sigma2=1.0):
    return rmt.marchenko_pastur_pdf(x, q, sigma2) * q


def alpha_without_one(x, xmin):
    return rmt.power_law_alpha(x, xmin) - 1


def alpha_of_all_samples(x, xmin):
    x = np.asarray(x, dtype=np.float64)
    return float(1 + len(x) / np.sum(np.log(np.clip(x, 1e-300, None) / xmin)))


def prune_globally(weights, masks, fraction):
    """One threshold over all layers together (and one fraction)."""
    frac = float(np.mean(list(fraction.values()))) if isinstance(fraction, dict) else fraction
    names = list(masks)
    flat_w = torch.cat([weights[n].flatten() for n in names])
    flat_m = torch.cat([masks[n].flatten() for n in names])
    pruned = lottery.prune_round({"all": flat_w}, {"all": flat_m}, frac)["all"]
    out, start = {}, 0
    for n in names:
        out[n] = pruned[start:start + masks[n].numel()].view_as(masks[n])
        start += masks[n].numel()
    return out


def prune_counting_the_pruned(weights, masks, fraction):
    """Ranks every weight by |w ⊙ m|: the already-pruned zeros fill the smallest slots."""
    out = {}
    for name, mask in masks.items():
        frac = fraction[name] if isinstance(fraction, dict) else fraction
        k = int(round(frac * mask.sum().item()))
        order = torch.argsort((weights[name] * mask).abs().flatten(), stable=True)
        new = mask.flatten().clone()
        new[order[:k]] = 0
        out[name] = new.view_as(mask)
    return out


def prune_by_signed_value(weights, masks, fraction):
    """Ranks by w itself (w − min w, never negative, so |.| keeps its order): prunes the most negative."""
    return lottery.prune_round({k: w - w.min() for k, w in weights.items()}, masks, fraction)


def rewind_keeps_pruned(initial, masks):
    return {k: v.clone() for k, v in initial.items()}


def step_masks_gradients_only(params, grads, masks, lr):
    return {k: p - lr * (grads[k] * masks[k] if k in masks else grads[k]) for k, p in params.items()}


def step_masks_before_update(params, grads, masks, lr):
    return {k: (p * masks[k] if k in masks else p) - lr * grads[k] for k, p in params.items()}


LAB.bug("ntk_of_summed_outputs", ntk_jacobian=ntk_of_summed_outputs)
LAB.bug("ntk_without_biases", ntk_jacobian=ntk_without_biases)
LAB.bug("ntk_outputs_swapped", ntk_jacobian=ntk_outputs_swapped)
LAB.bug("mp_edges_without_root", marchenko_pastur_pdf=mp_edges_without_root)
LAB.bug("mp_without_q", marchenko_pastur_pdf=mp_without_q)
LAB.bug("alpha_without_one", power_law_alpha=alpha_without_one)
LAB.bug("alpha_of_all_samples", power_law_alpha=alpha_of_all_samples)
LAB.bug("prune_globally", prune_round=prune_globally)
LAB.bug("prune_counting_the_pruned", prune_round=prune_counting_the_pruned)
LAB.bug("prune_by_signed_value", prune_round=prune_by_signed_value)
LAB.bug("rewind_keeps_pruned", rewind=rewind_keeps_pruned)
LAB.bug("step_masks_gradients_only", masked_step=step_masks_gradients_only)
LAB.bug("step_masks_before_update", masked_step=step_masks_before_update)


# --- deliverable ---------------------------------------------------------------------------------------------
def run(profile: str, out: Path) -> tuple[dict, str]:
    from llmlab.representation import experiment

    return experiment.run(experiment.FULL if profile == "full" else experiment.QUICK, out)
