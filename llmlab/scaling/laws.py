"""Scaling laws: power-law fits, Chinchilla's parametric loss L(N, D) = E + A/N^alpha + B/D^beta, and the
compute-optimal allocation.

- ``fit_power_law``: Kaplan et al.'s single-variable laws L(x) = a x^b (least squares in log-log space).
- ``fit_chinchilla``: Hoffmann et al.'s Approach 3: the Huber loss (delta = 1e-3) between log L and
  LSE(a - alpha log N, b - beta log D, e), minimized with L-BFGS from a grid of starting points. Besiroglu et
  al. (2024, "Chinchilla Scaling: A replication attempt") redid this fit on points read off Figure 4; their
  estimates and standard errors are ``EPOCH_2024`` and ``EPOCH_2024_SE``.
- ``isoflop_minimum``: Approach 2: a parabola in log N through one budget's runs; its vertex is N_opt(C).
- ``compute_optimal``: the N, D minimizing L(N, D) subject to C = 6 N D (Hoffmann et al., eq. 4).
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np


def fit_power_law(x, y) -> tuple[float, float]:
    """Least-squares fit of y = a * x^b on a log-log scale; returns (a, b)."""
    lx, ly = np.log(np.asarray(x, dtype=np.float64)), np.log(np.asarray(y, dtype=np.float64))
    b = float(((lx - lx.mean()) * (ly - ly.mean())).sum() / ((lx - lx.mean()) ** 2).sum())
    return float(np.exp(ly.mean() - b * lx.mean())), b


def bootstrap(fit, arrays: tuple, n: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Percentile bootstrap of ``fit(*arrays)`` (a tuple of numbers) over resampled rows: for each output,
    the point estimate on all rows and the ``level`` interval. Returns {"estimate", "low", "high", "samples"};
    a resample the fit cannot use (e.g. one x value repeated) is dropped from the samples."""
    rng = np.random.default_rng(seed)
    arrays = tuple(np.asarray(a) for a in arrays)
    rows = len(arrays[0])
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        samples = np.array([fit(*(a[idx] for a in arrays)) for idx in (rng.integers(0, rows, rows) for _ in range(n))])
    samples = samples[np.isfinite(samples).reshape(len(samples), -1).all(axis=1)]
    q = (1 - level) / 2
    return {"estimate": np.asarray(fit(*arrays)), "low": np.quantile(samples, q, axis=0),
            "high": np.quantile(samples, 1 - q, axis=0), "samples": samples}


@dataclass(frozen=True)
class ChinchillaFit:
    """L(N, D) = E + A / N^alpha + B / D^beta (N parameters, D training tokens, L nats per token)."""
    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, N, D):
        return self.E + self.A / np.asarray(N, dtype=np.float64) ** self.alpha \
            + self.B / np.asarray(D, dtype=np.float64) ** self.beta

    @property
    def a(self) -> float:
        """N_opt grows as C^a under C = 6 N D."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        """D_opt grows as C^b (a + b = 1)."""
        return self.alpha / (self.alpha + self.beta)

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    def compute_optimal(self, C):
        """(N_opt, D_opt) under C = 6 N D (see ``compute_optimal``)."""
        return compute_optimal(self.A, self.B, self.alpha, self.beta, C)


# Hoffmann et al. 2022 (Approach 3, as printed) and Besiroglu et al. 2024 (their refit, with standard errors).
HOFFMANN_2022 = ChinchillaFit(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
EPOCH_2024 = ChinchillaFit(E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658)
EPOCH_2024_SE = {"E": 0.03, "A": 124.58, "B": 1293.23, "alpha": 0.02, "beta": 0.02}

# Hoffmann et al.'s grid of starting points for (a = log A, b = log B, e = log E, alpha, beta)
HOFFMANN_GRID = np.array(list(itertools.product(np.arange(0, 30, 5), np.arange(0, 30, 5), np.arange(-1, 1.5, 0.5),
                                                np.arange(0, 2.5, 0.5), np.arange(0, 2.5, 0.5))), dtype=np.float64)


def huber(r, delta: float):
    """Huber's loss: r^2/2 within |r| <= delta, delta (|r| - delta/2) outside (elementwise)."""
    r = np.asarray(r, dtype=np.float64)
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def _objective(p, logN, logD, logL, delta):
    """Sum of Huber losses of log L against LSE(a - alpha log N, b - beta log D, e), and its gradient."""
    a, b, e, alpha, beta = p
    terms = np.stack([a - alpha * logN, b - beta * logD, np.full_like(logN, e)])
    top = terms.max(axis=0)
    w = np.exp(terms - top)
    total = w.sum(axis=0)
    r = top + np.log(total) - logL
    w /= total
    dr = np.clip(r, -delta, delta)  # d huber / d r
    grad = np.array([(dr * w[0]).sum(), (dr * w[1]).sum(), (dr * w[2]).sum(),
                     -(dr * w[0] * logN).sum(), -(dr * w[1] * logD).sum()])
    return float(huber(r, delta).sum()), grad


def chinchilla_objective(params, N, D, L, delta: float = 1e-3) -> float:
    """Approach 3's objective at params = (a, b, e, alpha, beta) (A = e^a, B = e^b, E = e^e): the *sum* over
    runs of Huber(LSE(a - alpha log N, b - beta log D, e) - log L). A mean would shrink it ~N-fold and stop
    L-BFGS early, as Besiroglu et al. found in the original fit."""
    return _objective(np.asarray(params, dtype=np.float64), np.log(np.asarray(N, np.float64)),
                      np.log(np.asarray(D, np.float64)), np.log(np.asarray(L, np.float64)), delta)[0]


def fit_chinchilla(N, D, L, delta: float = 1e-3, starts=None, keep: int | None = None) -> dict[str, float]:
    """Approach 3: L-BFGS from every starting point (a, b, e, alpha, beta) in ``starts`` (default ``HOFFMANN_GRID``,
    Hoffmann et al.'s 4,500); the best optimum wins. With ``keep``, only the ``keep`` starts with the lowest
    initial objective are run. Returns {"E", "A", "B", "alpha", "beta"} (``ChinchillaFit(**fit)``)."""
    from scipy.optimize import minimize

    args = (np.log(np.asarray(N, np.float64)), np.log(np.asarray(D, np.float64)),
            np.log(np.asarray(L, np.float64)), delta)
    starts = np.atleast_2d(np.asarray(HOFFMANN_GRID if starts is None else starts, dtype=np.float64))
    if keep is not None and keep < len(starts):
        starts = starts[np.argsort([_objective(s, *args)[0] for s in starts])[:keep]]
    best = None
    for s in starts:
        # tight tolerances: the objective is ~1e-3 in all, and scipy's defaults stop before convergence (the
        # reason Besiroglu et al. give for Hoffmann et al.'s estimates)
        r = minimize(_objective, s, args=args, jac=True, method="L-BFGS-B",
                     options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 5000})
        if best is None or r.fun < best.fun:
            best = r
    a, b, e, alpha, beta = best.x
    return {"E": math.exp(e), "A": math.exp(a), "B": math.exp(b), "alpha": float(alpha), "beta": float(beta)}


def start_of(fit: ChinchillaFit) -> np.ndarray:
    """The fit as a starting point (a, b, e, alpha, beta) for ``fit_chinchilla``."""
    return np.array([math.log(fit.A), math.log(fit.B), math.log(fit.E), fit.alpha, fit.beta])


def compute_optimal(A: float, B: float, alpha: float, beta: float, C):
    """(N_opt, D_opt) minimizing E + A/N^alpha + B/D^beta subject to 6 N D = C (Hoffmann et al. 2022, eq. 4):
    G = (alpha A / (beta B))^(1/(alpha+beta)), N_opt = G (C/6)^(beta/(alpha+beta)), D_opt = (C/6) / N_opt.
    E does not move the optimum. Floats for a float C, arrays for an array."""
    G = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    N = G * (np.asarray(C, dtype=np.float64) / 6) ** (beta / (alpha + beta))
    D = np.asarray(C, dtype=np.float64) / 6 / N
    return (float(N), float(D)) if np.ndim(C) == 0 else (N, D)


def isoflop_minimum(params, losses) -> float:
    """Approach 2 for one compute budget: the vertex of the least-squares parabola of loss in log N."""
    x = np.log(np.asarray(params, dtype=np.float64))
    center = x.mean()
    c2, c1, _ = np.polyfit(x - center, np.asarray(losses, dtype=np.float64), 2)
    if c2 <= 0:
        raise ValueError("the IsoFLOP runs do not curve upwards around a minimum")
    return float(np.exp(center - c1 / (2 * c2)))


def approach2(runs: list[dict], targets=(1e23, 1e24), n_boot: int = 1000, seed: int = 0) -> dict:
    """Hoffmann et al.'s Approach 2 on IsoFLOP runs ({"parameters", "compute_budget", "final_loss"}): N_opt
    per budget, power laws N_opt = k C^a and D_opt = C / (6 N_opt), and predictions at ``targets`` with 95%
    intervals (bootstrap over each budget's runs)."""
    budgets = sorted({r["compute_budget"] for r in runs})
    groups = [[(r["parameters"], r["final_loss"]) for r in runs if r["compute_budget"] == c] for c in budgets]
    rng = np.random.default_rng(seed)

    def fit(groups):
        n_opt = np.array([isoflop_minimum(*zip(*g, strict=True)) for g in groups])
        k, a = fit_power_law(budgets, n_opt)
        return n_opt, k, a

    n_opt, k, a = fit(groups)
    preds = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", np.exceptions.RankWarning)  # resamples that repeat one run
        for _ in range(n_boot):
            try:
                _, kb, ab = fit([[g[i] for i in rng.integers(0, len(g), len(g))] for g in groups])
            except (ValueError, np.linalg.LinAlgError):  # a resample without a curved minimum
                continue
            preds.append([kb * t ** ab for t in targets] + [ab])
    preds = np.array(preds)
    out = {"budgets": budgets, "n_opt": n_opt.tolist(), "d_opt": (np.array(budgets) / 6 / n_opt).tolist(),
           "a": a, "a_interval": np.quantile(preds[:, -1], [0.025, 0.975]).tolist(), "k": k, "predictions": {}}
    for i, t in enumerate(targets):
        n, (lo, hi) = k * t ** a, np.quantile(preds[:, i], [0.025, 0.975])
        out["predictions"][f"{t:.0e}"] = {"N_opt": n, "N_interval": [lo, hi], "D_opt": t / 6 / n,
                                          "D_interval": [t / 6 / hi, t / 6 / lo]}
    return out
