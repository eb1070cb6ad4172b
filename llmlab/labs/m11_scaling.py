"""Lab m11: scaling laws. Kaplan et al.'s L(N), L(D) and L(C) on a zoo of Llama-style models llmlab trains
itself, Chinchilla's parametric L(N, D) (Approach 3) refitted on Hoffmann et al.'s published points and
compared with Besiroglu et al.'s replication, Approach 2 on IsoFLOP runs, the gradient noise scale along
training, and the compute-optimal plan (``llmlab plan``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from scipy import interpolate, optimize, special

from llmlab.labs.base import CheckContext, Lab, LabLimits
from llmlab.plots import figure
from llmlab.scaling import laws, noise, zoo
from llmlab.scaling.laws import ChinchillaFit

LAB = Lab("m11", module=__name__, reference="llmlab.scaling.laws",
          spec=["fit_power_law", "chinchilla_objective", "fit_chinchilla", "isoflop_minimum", "compute_optimal",
                "llmlab.scaling.noise:noise_scale_estimates", "llmlab.scaling.zoo:envelope"],
          limits=LabLimits(call_timeout_s=60, total_timeout_s=300, memory_mb=2048),
          preload=("scipy.optimize",),
          own_work="power-law and Huber fits, the IsoFLOP vertex, the compute-optimal split and the noise-scale "
                   "estimators, from numpy and scipy.optimize.minimize",
          forbidden=("scipy.optimize:curve_fit", "scipy.special:huber", "scipy.special:pseudo_huber"))

TRUE = {"E": 1.7, "A": 400.0, "B": 1500.0, "alpha": 0.33, "beta": 0.29}  # a known surface for synthetic runs


def _surface(ctx: CheckContext, n: int, truth: dict, noise: float):
    """Runs (N, D, L) on ``truth``'s surface with log-normal noise, N in [1e7, 1e10], D in [1e8, 1e11]."""
    N = 10 ** ctx.rng.uniform(7, 10, n)
    D = 10 ** ctx.rng.uniform(8, 11, n)
    L = ChinchillaFit(**truth).loss(N, D) * np.exp(noise * ctx.rng.standard_normal(n))
    return N, D, L


@LAB.check(points=2, grades="fitted scaling exponents (alpha, beta, gamma)")
def power_law_fit(ctx: CheckContext):
    """fit_power_law(x, y) returns (a, b) of y = a x^b: exact on noiseless data, and equal to least squares
    of log y on log x (numpy.polyfit, 1e-9) on noisy data, as Kaplan et al. fit their laws."""
    b_true = -ctx.rng.uniform(0.05, 0.6)
    a_true = 10 ** ctx.rng.uniform(-1, 2)
    x = np.geomspace(10 ** ctx.rng.uniform(3, 5), 10 ** ctx.rng.uniform(8, 10), ctx.randint(6, 15))
    a, b = (ctx.number(v, what) for v, what in zip(ctx.call("fit_power_law", x.tolist(), (a_true * x**b_true).tolist()),
                                                   ("a", "b"), strict=True))
    ctx.close(b, b_true, atol=1e-9, what="exponent on noiseless data")
    ctx.close(a, a_true, atol=0, rtol=1e-8, what="coefficient on noiseless data")
    y = a_true * x**b_true * np.exp(0.2 * ctx.rng.standard_normal(len(x)))
    want_b, want_log_a = np.polyfit(np.log(x), np.log(y), 1)
    a, b = (ctx.number(v, what) for v, what in zip(ctx.call("fit_power_law", x.tolist(), y.tolist()), ("a", "b"),
                                                   strict=True))
    ctx.close(b, want_b, atol=1e-9, what="exponent on noisy data (least squares in log-log)")
    ctx.close(a, math.exp(want_log_a), atol=0, rtol=1e-8, what="coefficient on noisy data")


def _objective_reference(p, N, D, L, delta):
    pred = special.logsumexp([p[0] - p[3] * np.log(N), p[1] - p[4] * np.log(D), np.full(len(N), p[2])], axis=0)
    return float(special.huber(delta, pred - np.log(L)).sum())


@LAB.check(points=2, grades="power-law loss surfaces")
def huber_objective(ctx: CheckContext):
    """chinchilla_objective(params, N, D, L, delta) is the sum of Huber losses of LSE(a - alpha log N,
    b - beta log D, e) - log L (scipy.special.logsumexp and scipy.special.huber, 1e-10 relative), for
    residuals inside and far outside delta, and for a parameter set far off the data."""
    N, D, L = _surface(ctx, 60, TRUE, 0.02)
    for params, delta in (([math.log(400), math.log(1500), math.log(1.7), 0.33, 0.29], 1e-3),
                          ([ctx.rng.uniform(0, 25), ctx.rng.uniform(0, 25), ctx.rng.uniform(-1, 1),
                            ctx.rng.uniform(0, 2), ctx.rng.uniform(0, 2)], 1e-3),
                          ([math.log(400), math.log(1500), math.log(1.7), 0.33, 0.29], 0.5)):
        got = ctx.number(ctx.call("chinchilla_objective", params, N.tolist(), D.tolist(), L.tolist(), delta),
                         "objective")
        want = _objective_reference(params, N, D, L, delta)
        ctx.close(got, want, atol=0, rtol=1e-10, what=f"objective at {np.round(params, 3).tolist()}, delta={delta}")


@LAB.check(points=3, grades="fitted scaling exponents (alpha, beta, gamma)")
def chinchilla_fit_recovers_a_known_surface(ctx: CheckContext):
    """fit_chinchilla(N, D, L, delta, starts) on 300 runs of a known surface with 1% noise and 15 runs
    corrupted by +40% recovers alpha and beta within 0.06 of the truth (Huber is what keeps the outliers from
    pulling the fit) and within 0.005 of the reference's fit, and reaches an objective no worse than the
    reference's from the same starts. (Over 40 seeds the reference itself lands up to 0.029 from the true
    alpha: the noise, not the fit, sets how close the truth can be.)"""
    N, D, L = _surface(ctx, 300, TRUE, 0.01)
    bad = ctx.rng.choice(300, 15, replace=False)
    L[bad] *= 1.4
    starts = [[a, b, e, al, be] for a in (0, 10) for b in (5, 15) for e in (0.0, 1.0) for al, be in ((0.5, 0.5),)]
    got = ctx.call("fit_chinchilla", N.tolist(), D.tolist(), L.tolist(), 1e-3, starts)
    if not isinstance(got, dict) or set(got) != {"E", "A", "B", "alpha", "beta"}:
        ctx.expect(False, "fit_chinchilla must return a dict with keys E, A, B, alpha, beta")
    got = {k: ctx.number(v, k) for k, v in got.items()}
    ref = laws.fit_chinchilla(N, D, L, 1e-3, starts)
    for k in ("alpha", "beta"):
        ctx.close(got[k], TRUE[k], atol=0.06, what=f"fitted {k} (true {TRUE[k]})")
        ctx.close(got[k], ref[k], atol=0.005, what=f"fitted {k} (the reference fit's {ref[k]:.4f})")
    ctx.expect(min(got.values()) > 0, "A, B, E, alpha and beta must be positive")
    mine = _objective_reference([math.log(got["A"]), math.log(got["B"]), math.log(got["E"]), got["alpha"],
                                 got["beta"]], N, D, L, 1e-3)
    best = _objective_reference([math.log(ref["A"]), math.log(ref["B"]), math.log(ref["E"]), ref["alpha"],
                                 ref["beta"]], N, D, L, 1e-3)
    ctx.expect(mine <= best * (1 + 1e-4) + 1e-9,
               f"the fit's objective {mine:.6g} is above the reference's {best:.6g} from the same starts")


@LAB.check(points=2, grades="compute vs parameters vs data")
def isoflop_vertex(ctx: CheckContext):
    """isoflop_minimum(params, losses) is the vertex of the least-squares parabola of loss in log N: exact on
    a noiseless parabola, and numpy.polyfit's vertex (1e-9 relative) on noisy runs spread over 3 decades."""
    n_star = 10 ** ctx.rng.uniform(7, 10)
    N = n_star * np.geomspace(10 ** -ctx.rng.uniform(1, 1.5), 10 ** ctx.rng.uniform(1, 1.5), ctx.randint(6, 10))
    L = 3 + 0.05 * np.log(N / n_star) ** 2
    ctx.close(ctx.number(ctx.call("isoflop_minimum", N.tolist(), L.tolist()), "N_opt"), n_star, atol=0, rtol=1e-6,
              what="N_opt of a noiseless parabola in log N")
    L = L + 0.01 * ctx.rng.standard_normal(len(N))
    c2, c1, _ = np.polyfit(np.log(N), L, 2)
    ctx.close(ctx.number(ctx.call("isoflop_minimum", N.tolist(), L.tolist()), "N_opt"), math.exp(-c1 / (2 * c2)),
              atol=0, rtol=1e-9, what="N_opt of noisy IsoFLOP runs")


def _split_loss(log_n, A, B, alpha, beta, C):
    return A / math.exp(log_n) ** alpha + B / (C / 6 / math.exp(log_n)) ** beta


@LAB.check(points=2, grades="compute vs parameters vs data")
def compute_optimal_split(ctx: CheckContext):
    """compute_optimal(A, B, alpha, beta, C) returns (N, D) with 6 N D = C that minimizes A/N^alpha +
    B/D^beta: equal to a numerical minimization in log N (scipy, 1e-6 relative) for random surfaces."""
    for _ in range(3):
        A, B = 10 ** ctx.rng.uniform(1, 4), 10 ** ctx.rng.uniform(1, 4)
        alpha, beta = ctx.rng.uniform(0.2, 0.6), ctx.rng.uniform(0.2, 0.6)
        C = 10 ** ctx.rng.uniform(18, 25)
        got = ctx.call("compute_optimal", A, B, alpha, beta, C)
        n, d = (ctx.number(v, w) for v, w in zip(got, ("N", "D"), strict=True))
        res = optimize.minimize_scalar(_split_loss, bounds=(0, math.log(C / 6)), args=(A, B, alpha, beta, C),
                                       method="bounded", options={"xatol": 1e-10})
        ctx.close(n, math.exp(res.x), atol=0, rtol=1e-6, what=f"N_opt at C={C:.2e}")
        ctx.close(6 * n * d, C, atol=0, rtol=1e-9, what="6 N D (must equal C)")


@LAB.check(points=2, grades="gradient noise scale")
def noise_scale_is_unbiased(ctx: CheckContext):
    """noise_scale_estimates(|G_small|^2, |G_big|^2, B_small, B_big) returns (|G|^2, tr Sigma): exact on the
    expectations |G|^2 + tr(Sigma)/B, and unbiased on sampled batches of per-example gradients with a known
    covariance (the mean of 2,000 estimates within 4 standard errors of the truth)."""
    dim = ctx.randint(5, 20)
    G = ctx.rng.standard_normal(dim)
    root = ctx.rng.standard_normal((dim, dim)) / math.sqrt(dim)
    sigma = root @ root.T * ctx.rng.uniform(1, 20)
    g2, tr = float(G @ G), float(np.trace(sigma))
    b_small, b_big = ctx.choice([(2, 16), (4, 32), (8, 64)])
    got = ctx.call("noise_scale_estimates", g2 + tr / b_small, g2 + tr / b_big, b_small, b_big)
    est = [ctx.number(v, w) for v, w in zip(got, ("|G|^2", "tr Sigma"), strict=True)]
    ctx.close(est, [g2, tr], atol=0, rtol=1e-9, what="(|G|^2, tr Sigma) from exact expectations")
    chol = np.linalg.cholesky(sigma + 1e-12 * np.eye(dim))
    trials = 2000
    per_example = G + ctx.rng.standard_normal((trials, b_big, dim)) @ chol.T
    small = (per_example[:, :b_small].mean(1) ** 2).sum(1)
    big = (per_example.mean(1) ** 2).sum(1)
    samples = np.array(ctx.run(probe_many_estimates, small.tolist(), big.tolist(), b_small, b_big), dtype=np.float64)
    ctx.expect(samples.shape == (trials, 2), "noise_scale_estimates must return two numbers")
    for i, (truth, name) in enumerate(((g2, "|G|^2"), (tr, "tr Sigma"))):
        mean, se = samples[:, i].mean(), samples[:, i].std() / math.sqrt(trials)
        ctx.expect(abs(mean - truth) <= 4 * se + 1e-9,
                   f"{name}: the mean of {trials} estimates is {mean:.4g}, the truth {truth:.4g} (standard error "
                   f"{se:.2g}): the estimator is biased")


def probe_many_estimates(sub, small, big, b_small, b_big):
    pairs = zip(small, big, strict=True)
    return [[float(v) for v in sub.noise_scale_estimates(s, b, b_small, b_big)] for s, b in pairs]


@LAB.check(points=2, grades="Kaplan et al.'s plots on a model zoo")
def compute_frontier(ctx: CheckContext):
    """envelope(records, key) on a zoo's learning curves: on a log grid of C (or D), the lowest loss any
    model reaches there, each curve interpolated linearly in log C between its checkpoints (checked with
    scipy.interpolate on a zoo drawn from a known surface)."""
    records = []
    for N in 10 ** np.sort(ctx.rng.uniform(5, 7.5, ctx.randint(3, 6))):
        for D in np.geomspace(1e5, 10 ** ctx.rng.uniform(6.5, 7.5), ctx.randint(4, 9)):
            records.append({"N": float(N), "D": float(D), "C": float(6 * N * D),
                            "val_loss": float(ChinchillaFit(**TRUE).loss(N, D) + 0.01 * ctx.rng.standard_normal())})
    for key in ("C", "D"):
        got = ctx.call("envelope", records, key, 10)
        ctx.expect(isinstance(got, list | tuple) and len(got) == 2 and all(isinstance(g, list | tuple) for g in got),
                   "envelope must return (grid, losses), two lists of numbers")
        grid, best = (np.array([ctx.number(v, what) for v in values]) for values, what in zip(got, ("grid", "loss"),
                                                                                               strict=True))
        want_grid = np.geomspace(min(r[key] for r in records) * 2, max(r[key] for r in records), 10)
        want = np.full(10, np.inf)
        for N in {r["N"] for r in records}:
            curve = sorted((r[key], r["val_loss"]) for r in records if r["N"] == N)
            f = interpolate.interp1d(np.log([c for c, _ in curve]), [v for _, v in curve], bounds_error=False,
                                     fill_value=np.inf)
            want = np.minimum(want, f(np.log(want_grid)))
        keep = np.isfinite(want)
        ctx.close(torch.from_numpy(grid), torch.from_numpy(want_grid[keep]), atol=0, rtol=1e-9, what=f"{key} grid")
        ctx.close(torch.from_numpy(best), torch.from_numpy(want[keep]), atol=1e-9, what=f"L({key}) envelope")


# --- seeded bugs --------------------------------------------------------------------------------------
def power_law_regresses_x_on_y(x, y):
    lx, ly = np.log(np.asarray(x, dtype=np.float64)), np.log(np.asarray(y, dtype=np.float64))
    b = float(((ly - ly.mean()) ** 2).sum() / ((lx - lx.mean()) * (ly - ly.mean())).sum())  # 1 / slope of x on y
    return float(np.exp(ly.mean() - b * lx.mean())), b


def objective_squared_loss(params, N, D, L, delta=1e-3):  # no Huber: outliers weigh quadratically
    return laws.chinchilla_objective(params, N, D, L, delta=1e9)


def objective_mean(params, N, D, L, delta=1e-3):  # the average, not the sum (stops L-BFGS early)
    return laws.chinchilla_objective(params, N, D, L, delta) / len(N)


def fit_with_squared_loss(N, D, L, delta=1e-3, starts=None, keep=None):
    return laws.fit_chinchilla(N, D, L, 1e9, starts, keep)


def isoflop_in_linear_n(params, losses):
    c2, c1, _ = np.polyfit(np.asarray(params, dtype=np.float64) / 1e9, np.asarray(losses, dtype=np.float64), 2)
    return float(-c1 / (2 * c2) * 1e9)


def compute_optimal_exponents_swapped(A, B, alpha, beta, C):
    G = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    N = G * (C / 6) ** (alpha / (alpha + beta))
    return float(N), float(C / 6 / N)


def noise_g2_is_big_batch_norm(g_small_sq, g_big_sq, b_small, b_big):
    _, trace = noise.noise_scale_estimates(g_small_sq, g_big_sq, b_small, b_big)
    return float(g_big_sq), trace  # |G_big|^2 overestimates |G|^2 by tr(Sigma)/B_big


def envelope_linear_in_c(records, key="C", points=12):  # interpolates each learning curve in C, not log C
    grid = np.geomspace(min(r[key] for r in records) * 2, max(r[key] for r in records), points)
    best = np.full(points, np.inf)
    for N in {r["N"] for r in records}:
        curve = sorted((r[key], r["val_loss"]) for r in records if r["N"] == N)
        x, loss = np.array([p[0] for p in curve]), np.array([p[1] for p in curve])
        inside = (grid >= x[0]) & (grid <= x[-1])
        best[inside] = np.minimum(best[inside], np.interp(grid[inside], x, loss))
    keep = np.isfinite(best)
    return grid[keep].tolist(), best[keep].tolist()


LAB.bug("power_law_regresses_x_on_y", fit_power_law=power_law_regresses_x_on_y)
LAB.bug("objective_without_huber", chinchilla_objective=objective_squared_loss)
LAB.bug("objective_mean_not_sum", chinchilla_objective=objective_mean)
LAB.bug("fit_without_huber", fit_chinchilla=fit_with_squared_loss)
LAB.bug("isoflop_parabola_in_n", isoflop_minimum=isoflop_in_linear_n)
LAB.bug("optimal_exponents_swapped", compute_optimal=compute_optimal_exponents_swapped)
LAB.bug("noise_g2_biased", noise_scale_estimates=noise_g2_is_big_batch_norm)
LAB.bug("envelope_linear_in_c", envelope=envelope_linear_in_c)


# --- deliverable --------------------------------------------------------------------------------------
def _law(x, y, n_boot: int = 1000) -> dict:
    """A Kaplan power law y = a x^b with a 95% bootstrap interval of the exponent (reported as -b, the
    rate at which the loss falls)."""
    fit = laws.bootstrap(laws.fit_power_law, (np.asarray(x), np.asarray(y)), n=n_boot)
    return {"a": float(fit["estimate"][0]), "exponent": float(-fit["estimate"][1]),
            "interval": [float(-fit["high"][1]), float(-fit["low"][1])]}


def _zoo_section(profile: str, out: Path) -> tuple[dict, str]:
    from llmlab.data import shakespeare

    tok, train, val = shakespeare.char_tokens()
    records = zoo.train_zoo(zoo.FULL if profile == "full" else zoo.QUICK, train, val, tok.vocab_size)
    sizes = sorted({r["N"] for r in records})
    final = [min((r for r in records if r["N"] == N), key=lambda r: -r["D"])["val_loss"] for N in sizes]
    C, LC = zoo.envelope(records, "C")
    D, LD = zoo.envelope(records, "D")
    fits = {"alpha (L(N))": _law(sizes, final), "beta (L(D))": _law(D, LD), "gamma (L(C))": _law(C, LC)}
    colors = __import__("matplotlib").colormaps["viridis"](np.linspace(0, 0.9, len(sizes)))
    with figure(out / "kaplan_figure1.png", "Zoo: L(C), L(D), L(N) (Tiny Shakespeare, chars)", ncols=3) as axes:
        for N, color in zip(sizes, colors, strict=True):
            curve = sorted((r["C"], r["D"], r["val_loss"]) for r in records if r["N"] == N)
            axes[0].loglog([c for c, _, _ in curve], [v for _, _, v in curve], color=color, lw=1,
                           label=f"N={N / 1e6:.2f}M")
            axes[1].loglog([d for _, d, _ in curve], [v for _, _, v in curve], color=color, lw=1)
        panels = (((C, LC), "gamma (L(C))", "compute C = 6ND (FLOPs)"), ((D, LD), "beta (L(D))", "tokens D"),
                  ((sizes, final), "alpha (L(N))", "non-embedding N"))
        for ax, ((x, y), name, xlabel) in zip(axes, panels, strict=True):
            f = fits[name]
            ax.loglog(x, y, "ko", ms=3)
            ax.loglog(x, [f["a"] * v ** -f["exponent"] for v in x], "k--",
                      label=f"{name.split()[0]} = {f['exponent']:.3f} [{f['interval'][0]:.3f}, {f['interval'][1]:.3f}]")
            ax.set_xlabel(xlabel)
            ax.legend(fontsize=7)
        axes[0].set_ylabel("validation loss (nats/char)")
    with figure(out / "noise_scale.png", "Gradient noise scale B_simple along training") as ax:
        for N, color in zip(sizes, colors, strict=True):
            rows = [r for r in records if r["N"] == N]
            ax.loglog([r["D"] for r in rows], [max(r["b_simple"], 1e-3) for r in rows], "o-", color=color,
                      label=f"N={N / 1e6:.2f}M")
        ax.set_xlabel("tokens seen")
        ax.set_ylabel("B_simple (sequences)")
        ax.legend(fontsize=7)
    metrics = {"zoo": {"models": len(sizes), "N": sizes, "N_total": sorted({r["N_total"] for r in records}),
                       "final_val_loss": final, "tokens_per_model": max(r["D"] for r in records),
                       "train_seconds": sum(max(r["seconds"] for r in records if r["N"] == N) for N in sizes)},
               "kaplan_exponents": fits,
               "noise_scale_final": {f"{N / 1e6:.3f}M": [r for r in records if r["N"] == N][-1]["b_simple"]
                                     for N in sizes},
               "records": records}
    rows = "\n".join(f"| {k} | {v['exponent']:.3f} | [{v['interval'][0]:.3f}, {v['interval'][1]:.3f}] |"
                     for k, v in fits.items())
    report = f"""
## Kaplan et al.'s laws on llmlab's own zoo
{len(sizes)} Llama-style models, N = {sizes[0] / 1e6:.3f}M to {sizes[-1] / 1e6:.2f}M non-embedding parameters,
each trained on the same {metrics['zoo']['tokens_per_model']:,} characters of Tiny Shakespeare (constant
learning rate after warm-up) and evaluated at {len(records) // len(sizes)} token budgets along the way
({metrics['zoo']['train_seconds']:.0f} s of training). Fits are least squares in log-log with 95% bootstrap
intervals; Kaplan et al. report 0.076 (N), 0.095 (D) and 0.050 (C) at 1e3-1e9 times this scale.

| law | exponent | 95% interval |
|---|---|---|
{rows}

![Kaplan](kaplan_figure1.png)

The gradient noise scale B_simple (McCandlish et al. 2018) from a batch split four ways at each checkpoint,
as the ratio of moving averages of the unbiased |G|^2 and tr(Sigma) estimates; it grows as the loss falls.

![noise](noise_scale.png)
"""
    return metrics, report


def _prediction_row(budget: str, p: dict) -> str:
    return (f"| {budget} | {p['N_opt']:.3g} | [{p['N_interval'][0]:.3g}, {p['N_interval'][1]:.3g}] | {p['D_opt']:.3g} "
            f"| [{p['D_interval'][0]:.3g}, {p['D_interval'][1]:.3g}] |")


def _chinchilla_section(out: Path, n_boot: int) -> tuple[dict, str]:
    from llmlab.scaling import planner, published

    N, D, L = published.chinchilla_points()
    fit = ChinchillaFit(**laws.fit_chinchilla(N, D, L, keep=None if n_boot > 500 else 64))
    boot = laws.bootstrap(lambda n, d, l: tuple(laws.fit_chinchilla(n, d, l, starts=laws.start_of(fit)).values()),
                          (N, D, L), n=n_boot)
    se = dict(zip(("E", "A", "B", "alpha", "beta"), boot["samples"].std(axis=0), strict=True))
    ours = fit.as_dict()
    within = {k: abs(ours[k] - getattr(laws.EPOCH_2024, k)) <= laws.EPOCH_2024_SE[k] for k in ours}
    runs = published.isoflop_runs()
    a2 = laws.approach2(runs)
    plan = planner.plan(1e21, fit=fit, points=(N, D, L), n_boot=min(n_boot, 200))
    with figure(out / "chinchilla_fit.png", "Approach 3 on Hoffmann et al.'s Figure 4 points", ncols=2) as (a1, a2x):
        a1.plot(fit.loss(N, D), L, ".", color="gray", ms=4, label=f"{len(N)} published runs")
        a1.plot([L.min(), L.max()], [L.min(), L.max()], "k--", lw=1, label="y = x")
        a1.set_xlabel("fitted L(N, D)")
        a1.set_ylabel("published loss")
        a1.legend(fontsize=7)
        for C in (1e19, 1e20, 1e21, 1e22):
            n_grid, l_grid = planner.isoflop_profile(fit, C)
            a2x.semilogx(n_grid, l_grid, label=f"C={C:.0e}")
            a2x.plot(*fit.compute_optimal(C)[:1], fit.loss(*fit.compute_optimal(C)), "k*")
        a2x.set_xlabel("parameters N")
        a2x.set_ylabel("fitted L at D = C/6N")
        a2x.legend(fontsize=7)
    budgets = np.array(a2["budgets"])
    with figure(out / "isoflop_approach2.png", "Approach 2 on the CS336 IsoFLOP runs", ncols=2) as (b1, b2):
        for c in a2["budgets"]:
            pts = sorted((r["parameters"], r["final_loss"]) for r in runs if r["compute_budget"] == c)
            b1.semilogx(*zip(*pts, strict=True), "o-", ms=3, label=f"{c:.0e}")
        lowest = [min(r["final_loss"] for r in runs if r["compute_budget"] == c) for c in a2["budgets"]]
        b1.semilogx(a2["n_opt"], lowest, "k*", label="N_opt (parabola vertex)")
        b1.set_xlabel("parameters N")
        b1.set_ylabel("final loss")
        b1.legend(fontsize=6)
        grid = np.geomspace(budgets[0], 1e24, 50)
        b2.loglog(budgets, a2["n_opt"], "ko", label="N_opt per budget")
        b2.loglog(grid, a2["k"] * grid ** a2["a"], "k--", label=f"N_opt ~ C^{a2['a']:.3f}")
        for t, p in a2["predictions"].items():
            b2.errorbar([float(t)], [p["N_opt"]], yerr=[[p["N_opt"] - p["N_interval"][0]],
                                                        [p["N_interval"][1] - p["N_opt"]]], fmt="r^")
        b2.set_xlabel("C (FLOPs)")
        b2.set_ylabel("N_opt")
        b2.legend(fontsize=7)
    metrics = {"chinchilla_fit": ours, "chinchilla_bootstrap_se": se, "epoch_2024": laws.EPOCH_2024.as_dict(),
               "epoch_2024_se": laws.EPOCH_2024_SE, "within_published_se": within, "n_points": len(N),
               "n_opt_exponent_a": fit.a, "approach2": a2,
               "plan_1e21": {"N": plan.N, "D": plan.D, "loss": plan.loss, "loss_interval": plan.loss_interval,
                             "tokens_per_param": plan.tokens_per_param, "shape": plan.shape}}
    table = "\n".join(f"| {k} | {ours[k]:.4g} | {se[k]:.3g} | {getattr(laws.EPOCH_2024, k):.4g} | "
                      f"{laws.EPOCH_2024_SE[k]:.3g} | {'yes' if within[k] else 'NO'} |" for k in ours)
    p23, p24 = a2["predictions"]["1e+23"], a2["predictions"]["1e+24"]
    report = f"""
## Chinchilla's L(N, D) (Approach 3) on the published points
{len(N)} of the 245 runs Epoch AI read off Hoffmann et al.'s Figure 4 (the five with the fewest tokens left out,
as Besiroglu et al. do), D = C / 6N; Huber loss (delta 1e-3, summed) on log L, L-BFGS from Hoffmann et al.'s
grid; standard errors from {n_boot} bootstrap refits.

| parameter | llmlab | SE | Besiroglu et al. 2024 | their SE | within their SE |
|---|---|---|---|---|---|
{table}

N_opt grows as C^{fit.a:.3f} (Besiroglu et al.: 0.513; Hoffmann et al.'s printed fit: 0.45).

![fit](chinchilla_fit.png)

## Approach 2 on IsoFLOP runs
A parabola in log N per budget (CS336's 9 budgets, 8 runs each), then N_opt = k C^a with a = {a2['a']:.3f}
[{a2['a_interval'][0]:.3f}, {a2['a_interval'][1]:.3f}]:

| C | N_opt | 95% interval | D_opt | 95% interval |
|---|---|---|---|---|
{_prediction_row("1e23", p23)}
{_prediction_row("1e24", p24)}

![approach2](isoflop_approach2.png)

## The plan for 1e21 FLOPs (`llmlab plan --flops 1e21`)
N = {plan.N:.3g}, D = {plan.D:.3g} ({plan.tokens_per_param:.1f} tokens per parameter), expected loss
{plan.loss:.3f} [{plan.loss_interval[0]:.3f}, {plan.loss_interval[1]:.3f}] (bootstrap of the fit), as
{plan.shape['n_layers']} layers of width {plan.shape['d_model']} with {plan.shape['n_heads']} heads.
"""
    return metrics, report


def run(profile: str, out: Path) -> tuple[dict, str]:
    torch.manual_seed(0)
    zoo_metrics, zoo_report = _zoo_section(profile, out)
    fit_metrics, fit_report = _chinchilla_section(out, n_boot=4000 if profile == "full" else 200)
    return {**zoo_metrics, **fit_metrics}, zoo_report + fit_report
