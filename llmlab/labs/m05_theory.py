"""Lab m05: learning theory. VC dimension by exhaustive shattering search with a certificate, PAC sample
complexity, the bias-variance decomposition by Monte Carlo, and double descent in random-features
regression."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linprog

from llmlab import theory
from llmlab.labs.base import CheckContext, Lab, LabLimits
from llmlab.plots import figure

LAB = Lab(
    "m05", module=__name__, reference="llmlab.theory",
    spec=["realizable", "shatters", "vc_dimension", "pac_sample_size", "polyfit_predict", "bias_variance",
          "min_norm_fit"],
    limits=LabLimits(call_timeout_s=60, total_timeout_s=300, memory_mb=2048),
    own_work=("realizability, shattering, VC dimension, PAC sample sizes, polynomial fits and the bias-variance "
              "decomposition (least squares through numpy.linalg is allowed)"),
    forbidden=("numpy:polyfit", "numpy.polynomial.polynomial:polyfit", "numpy.polynomial:Polynomial.fit", "sklearn"),
    preload=("scipy.optimize",),
)
TRUE_VC = {"threshold": 1, "interval": 2, "halfplane": 3, "rectangle": 4}


def truth_realizable(kind: str, pts: np.ndarray, y: np.ndarray) -> bool:
    """Independent of the reference: brute force over every classifier that matters on these points
    (cut points between sorted values, boxes with edges on point coordinates), and a max-margin LP for
    half-planes (separable iff the best margin is positive)."""
    pts, y = np.asarray(pts, float), np.asarray(y, int)
    if kind in ("threshold", "interval"):
        xs = np.sort(pts.reshape(-1))
        cuts = np.concatenate([[xs[0] - 1], (xs[:-1] + xs[1:]) / 2, [xs[-1] + 1]])
        x = pts.reshape(-1)
        if kind == "threshold":
            return any(np.array_equal((x >= t).astype(int), y) for t in cuts)
        return any(np.array_equal(((x >= a) & (x <= b)).astype(int), y) for a in cuts for b in cuts)
    if kind == "rectangle":
        xs, ys = np.unique(pts[:, 0]), np.unique(pts[:, 1])
        if not y.any():
            return True
        for x0, x1 in itertools.combinations_with_replacement(xs, 2):
            for y0, y1 in itertools.combinations_with_replacement(ys, 2):
                inside = (pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1)
                if np.array_equal(inside.astype(int), y):
                    return True
        return False
    s = 2 * y - 1  # maximise t subject to s_i (w.x_i + b) >= t, |w|, |b| <= 1
    A = np.hstack([-s[:, None] * np.hstack([pts, np.ones((len(pts), 1))]), np.ones((len(pts), 1))])
    res = linprog([0, 0, 0, -1], A_ub=A, b_ub=np.zeros(len(pts)), bounds=[(-1, 1)] * 3 + [(None, 1)],
                  method="highs")
    return bool(-res.fun > 1e-9)


def _pool(ctx: CheckContext, kind: str) -> np.ndarray:
    if kind in ("threshold", "interval"):
        return np.sort(ctx.rng.choice(100, size=ctx.randint(6, 8), replace=False)).astype(float)
    grid = np.array([[x, y] for x in range(4) for y in range(4)], dtype=float)
    return ctx.rng.permutation(grid)[:8] + ctx.rng.normal(scale=0.01, size=(8, 2))  # general position


def _hard_cases(kind: str, pool: np.ndarray, ctx: CheckContext) -> list[tuple[np.ndarray, tuple[int, ...]]]:
    """Labellings at the edge of each class, whatever the random draw: a gap for intervals, a negative above
    a positive for thresholds, a negative inside the positives' box for rectangles, XOR for half-planes.
    Returned as (points, labels)."""
    if kind in ("threshold", "interval"):
        p = np.sort(pool)[:3]
        return [(p, (1, 0, 1)), (p[:2], (1, 0)), (p, (0, 1, 1))]
    jitter = lambda a: a + ctx.rng.normal(scale=0.01, size=a.shape)
    square = jitter(np.array([[0.0, 0.0], [2.0, 2.0], [0.0, 2.0], [2.0, 0.0], [1.0, 1.0]]))
    return [(square[:4], (1, 1, 0, 0)), (square, (1, 1, 1, 1, 0)), (square[[0, 1, 4]], (1, 1, 0))]


@LAB.check(points=3, grades="VC dimension of thresholds and axis-aligned splits")
def realizability(ctx: CheckContext):
    """realizable agrees with a brute-force (or max-margin LP) truth on random labellings of random points,
    for thresholds, intervals, half-planes and rectangles; shatters agrees on random point sets."""
    for kind in theory.KINDS:
        pool = _pool(ctx, kind)
        cases = [(pool[idx], tuple(int(v) for v in ctx.rng.integers(0, 2, size=len(idx))))
                 for idx in (ctx.rng.choice(len(pool), size=ctx.randint(2, 6), replace=False) for _ in range(12))]
        for pts, labels in cases + _hard_cases(kind, pool, ctx):
            want = truth_realizable(kind, pts, np.array(labels))
            got = ctx.boolean(ctx.call("realizable", kind, pts, labels), "realizable")
            ctx.expect(got == want, f"realizable({kind!r}, {np.round(pts, 2).tolist()}, {labels}) "
                                          f"is {want}, got {got}")
        idx = ctx.rng.choice(len(pool), size=TRUE_VC[kind], replace=False)
        want = all(truth_realizable(kind, pool[idx], np.array(lab))
                   for lab in itertools.product((0, 1), repeat=len(idx)))
        ctx.expect(bool(ctx.call("shatters", kind, pool[idx])) == want, f"shatters({kind!r}, ...) should be {want}")


@LAB.check(points=3, grades="VC dimension of thresholds and axis-aligned splits")
def vc_certificates(ctx: CheckContext):
    """vc_dimension finds d = 1, 2, 3, 4 with a certificate the grader verifies: the shattered set is shattered
    and every (d+1)-subset of the pool comes with a labelling the class cannot realize."""
    for kind, d in TRUE_VC.items():
        pool = _pool(ctx, kind)
        if kind == "rectangle":  # make sure a diamond (a shatterable 4-set) is in the pool
            pool = np.vstack([pool[:4], [[10, 11], [12, 11], [11, 10], [11, 12]]]) + ctx.rng.normal(
                scale=0.01, size=(8, 2))
        cert = ctx.call("vc_dimension", kind, pool)
        ctx.expect(isinstance(cert, dict), f"vc_dimension({kind!r}) must return a dict, got {type(cert).__name__}")
        got_d = ctx.number(cert.get("d"), "vc_dimension's d", integer=True)
        ctx.expect(got_d == d, f"vc_dimension({kind!r}) = {got_d}, expected {d}")
        S = np.asarray(cert["shattered"])
        ctx.expect(len(S) == d and all(truth_realizable(kind, S, np.array(lab))
                                       for lab in itertools.product((0, 1), repeat=d)),
                   f"{kind}: the certificate's set of size {d} is not shattered")
        subsets = {tuple(sorted(int(i) for i in idx)): lab for idx, lab in cert["evidence"]}
        for idx in itertools.combinations(range(len(pool)), d + 1):
            lab = subsets.get(idx)
            ctx.expect(lab is not None, f"{kind}: no evidence for the subset {idx} of size {d + 1}")
            ctx.expect(not truth_realizable(kind, pool[list(idx)], np.array([int(v) for v in lab])),
                       f"{kind}: the evidence labelling {list(lab)} of subset {idx} is in fact realizable")


@LAB.check(points=2, grades="PAC bounds")
def pac_bounds(ctx: CheckContext):
    """pac_sample_size gives the stated finite-class and VC bounds (realizable and agnostic) exactly."""
    for _ in range(5):
        eps, delta = float(ctx.rng.uniform(0.01, 0.3)), float(ctx.rng.uniform(0.001, 0.2))
        H, d = ctx.randint(2, 10**6), ctx.randint(1, 50)
        cases = {
            ("finite", True): math.ceil((math.log(H) + math.log(1 / delta)) / eps),
            ("finite", False): math.ceil((math.log(H) + math.log(2 / delta)) / (2 * eps**2)),
            ("vc", True): math.ceil((4 * math.log2(2 / delta) + 8 * d * math.log2(13 / eps)) / eps),
            ("vc", False): math.ceil(64 / eps**2 * (2 * d * math.log(12 / eps) + math.log(4 / delta))),
        }
        for (family, real), want in cases.items():
            kw = {"h_size": H} if family == "finite" else {"vc_dim": d}
            got = ctx.number(ctx.call("pac_sample_size", eps, delta, realizable=real, **kw), "pac_sample_size",
                             integer=True)
            ctx.expect(got == want, f"pac_sample_size(eps={eps:.3f}, delta={delta:.3f}, {kw}, "
                                         f"realizable={real}) = {got}, expected {want}")


def _bv_data(ctx: CheckContext, T: int, n: int, m: int, noise: float):
    f = lambda x: np.sin(2 * np.pi * x)
    x_train = ctx.rng.uniform(0, 1, size=(T, n))
    y_train = f(x_train) + ctx.rng.normal(scale=noise, size=(T, n))
    x_test = np.linspace(0.02, 0.98, m)
    y_test = f(x_test) + ctx.rng.normal(scale=noise, size=(T, m))
    return x_train, y_train, x_test, f(x_test), y_test


@LAB.check(points=2, grades="bias-variance visualizer on synthetic data")
def bias_variance_decomposition(ctx: CheckContext):
    """bias_variance on given training sets: predictions equal numpy's polynomial least squares and bias^2,
    variance and MSE equal the grader's within 1e-6 (relative)."""
    noise = 0.3
    data = _bv_data(ctx, 200, 20, 50, noise)
    for degree in (1, ctx.randint(3, 6), 9):
        pred = np.stack([np.polynomial.Polynomial.fit(xt, yt, degree)(data[2]) for xt, yt in zip(data[0], data[1],
                                                                                                strict=True)])
        got_pred = ctx.call("polyfit_predict", degree, data[0], data[1], data[2])
        ctx.close(got_pred, torch.from_numpy(pred), atol=1e-6, rtol=1e-6, what=f"polyfit_predict degree {degree}")
        got = ctx.call("bias_variance", degree, *data, noise**2)
        ctx.expect(isinstance(got, dict), f"bias_variance must return a dict, got {type(got).__name__}")
        want = {"bias2": ((pred.mean(0) - data[3]) ** 2).mean(), "variance": pred.var(0).mean(),
                "mse": ((pred - data[4]) ** 2).mean()}
        for key, value in want.items():
            ctx.close(ctx.number(got.get(key), key), float(value), atol=1e-12, rtol=1e-6,
                      what=f"degree {degree}: {key}")


@LAB.check(points=1, grades="double descent")
def minimum_norm_solution(ctx: CheckContext):
    """min_norm_fit equals NumPy's minimum-norm least squares with fewer, equal and more features than samples."""
    n = ctx.randint(10, 20)
    for p in (n // 2, n, 3 * n):
        X, y = ctx.rng.normal(size=(n, p)), ctx.rng.normal(size=n)
        ctx.close(ctx.call("min_norm_fit", X, y), torch.from_numpy(np.linalg.lstsq(X, y, rcond=None)[0]), atol=1e-6,
                  what=f"min_norm_fit with n={n}, p={p}")


# ---------------------------------------------------------------- seeded bugs
def interval_gaps_allowed(kind, points, labels):
    return True if kind == "interval" else theory.realizable(kind, points, labels)


def rectangle_ignores_negatives(kind, points, labels):
    return True if kind == "rectangle" else theory.realizable(kind, points, labels)


def vc_without_evidence(kind, pool, max_d=6):
    cert = theory.vc_dimension(kind, pool, max_d)
    return {**cert, "evidence": cert["evidence"][:1]}


def pac_agnostic_linear(epsilon, delta, *, h_size=None, vc_dim=None, realizable=True):
    if not realizable and h_size is not None:
        return math.ceil((math.log(h_size) + math.log(2 / delta)) / (2 * epsilon))
    return theory.pac_sample_size(epsilon, delta, h_size=h_size, vc_dim=vc_dim, realizable=realizable)


def bias_variance_sample_variance(degree, x_train, y_train, x_test, f_test, y_test, noise_var):
    out = theory.bias_variance(degree, x_train, y_train, x_test, f_test, y_test, noise_var)
    pred = theory.polyfit_predict(degree, x_train, y_train, x_test)
    return {**out, "variance": float(pred.var(0, ddof=1).mean())}


def min_norm_ridge(features, y):
    return np.linalg.solve(features.T @ features + 1e-2 * np.eye(features.shape[1]), features.T @ y)


LAB.bug("interval_allows_gaps", realizable=interval_gaps_allowed)
LAB.bug("rectangle_ignores_negatives", realizable=rectangle_ignores_negatives)
LAB.bug("vc_certificate_incomplete", vc_dimension=vc_without_evidence)
LAB.bug("pac_agnostic_one_over_epsilon", pac_sample_size=pac_agnostic_linear)
LAB.bug("variance_with_ddof_1", bias_variance=bias_variance_sample_variance)
LAB.bug("ridge_instead_of_min_norm", min_norm_fit=min_norm_ridge)


# ---------------------------------------------------------------- deliverable
def _double_descent(n: int, d: int, widths: list[int], trials: int, rng) -> list[float]:
    errors = []
    for p in widths:
        errs = []
        for _ in range(trials):
            beta = rng.normal(size=d) / math.sqrt(d)
            X, Xt = rng.normal(size=(n, d)), rng.normal(size=(1000, d))
            y, yt = X @ beta + 0.1 * rng.normal(size=n), Xt @ beta
            W = rng.normal(size=(d, p))
            w = theory.min_norm_fit(theory.random_features(X, W), y)
            errs.append(float(((theory.random_features(Xt, W) @ w - yt) ** 2).mean()))
        errors.append(float(np.median(errs)))
    return errors


def run(profile: str, out: Path) -> tuple[dict, str]:
    big = profile == "full"
    rng = np.random.default_rng(0)
    ctx = CheckContext(0, caller=None)
    vc = {}
    for kind in theory.KINDS:
        pool = _pool(ctx, kind)
        if kind == "rectangle":
            pool = np.vstack([pool[:4], [[10, 11], [12, 11], [11, 10], [11, 12]]])
        cert = theory.vc_dimension(kind, pool)
        vc[kind] = {"d": cert["d"], "shattered": np.round(cert["shattered"], 2).tolist(),
                    "subsets_refuted": len(cert["evidence"]), "pool_size": len(pool)}

    eps = np.logspace(-2.5, -0.5, 30)
    with figure(out / "pac_sample_complexity.png", "PAC sample complexity (delta = 0.05)") as ax:
        for d in (1, 4, 16):
            ax.loglog(eps, [theory.pac_sample_size(e, 0.05, vc_dim=d) for e in eps], label=f"realizable, d={d}")
            ax.loglog(eps, [theory.pac_sample_size(e, 0.05, vc_dim=d, realizable=False) for e in eps], "--",
                      label=f"agnostic, d={d}")
        ax.set_xlabel("epsilon")
        ax.set_ylabel("samples m")
        ax.legend(fontsize=7)

    T = 2000 if big else 300
    noise = 0.3
    data = _bv_data(CheckContext(1, caller=None), T, 20, 100, noise)
    degrees = list(range(0, 11))
    rows = [{"degree": k, **theory.bias_variance(k, *data, noise**2)} for k in degrees]
    gaps = [abs(r["bias2"] + r["variance"] + r["noise"] - r["mse"]) / r["mse_se"] for r in rows]
    with figure(out / "bias_variance.png", f"Bias-variance of polynomial regression ({T} training sets of 20)") as ax:
        for key in ("bias2", "variance", "mse"):
            ax.semilogy(degrees, [r[key] for r in rows], "o-", label=key)
        ax.semilogy(degrees, [r["bias2"] + r["variance"] + r["noise"] for r in rows], "k:",
                    label="bias2 + variance + noise")
        ax.set_xlabel("degree")
        ax.legend()

    n, d = 100, 20
    widths = sorted({*np.unique(np.geomspace(10, 1000, 25 if big else 15).astype(int)), n})
    dd = _double_descent(n, d, widths, trials=20 if big else 5, rng=rng)
    peak = widths[int(np.argmax(dd))]
    with figure(out / "double_descent.png", f"Double descent: ReLU random features, n = {n} samples") as ax:
        ax.loglog(widths, dd, "o-")
        ax.axvline(n, color="r", ls="--", label="interpolation threshold p = n")
        ax.set_xlabel("features p")
        ax.set_ylabel("test MSE (median over draws)")
        ax.legend()
    metrics = {"vc": vc, "bias_variance": rows, "max_gap_in_standard_errors": max(gaps),
               "double_descent": {"widths": widths, "test_mse": dd, "peak_at": peak}}
    vc_table = "\n".join(f"| {k} | {v['d']} | {v['shattered']} | all {v['subsets_refuted']} subsets of size "
                         f"{v['d'] + 1} of a {v['pool_size']}-point pool |" for k, v in vc.items())
    report = f"""
## VC dimension by exhaustive search
| class | d | shattered set (certificate) | not shattered |
|---|---|---|---|
{vc_table}

## Bias-variance
Over {T} training sets of 20 noisy samples of sin(2 pi x), bias^2 + variance + noise matches the measured
test MSE at every degree 0-10 within {max(gaps):.2f} Monte Carlo standard errors.

## Double descent
Minimum-norm least squares on ReLU random features (n = {n}, input dimension {d}): test error peaks at
p = {peak} features, next to the interpolation threshold p = n, and falls again beyond it.

![pac](pac_sample_complexity.png)
![bv](bias_variance.png)
![dd](double_descent.png)
"""
    return metrics, report
