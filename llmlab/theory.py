"""Learning theory (lab m05): VC dimension by exhaustive shattering search, PAC sample complexity,
the bias-variance decomposition by Monte Carlo, and double descent in random-features regression."""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy.optimize import linprog

KINDS = ("threshold", "interval", "halfplane", "rectangle")


def realizable(kind: str, points: np.ndarray, labels: tuple[int, ...]) -> bool:
    """Whether some classifier of the class ``kind`` labels ``points`` with ``labels`` (0/1).

    threshold: 1[x >= t] on the line; interval: 1[a <= x <= b]; halfplane: 1[w.x + b >= 0] in the plane
    (strict separation: labels in general position); rectangle: 1[x in an axis-aligned box] in the plane.
    Points are (n,) on the line or (n, 2) in the plane; the all-zero labelling is always realizable.
    """
    pts, y = np.asarray(points, dtype=float), np.asarray(labels, dtype=int)
    if not y.any():
        return True
    if kind in ("threshold", "interval"):
        order = y[np.argsort(pts.reshape(-1), kind="stable")]
        ones = np.flatnonzero(order)
        contiguous = bool(order[ones[0]: ones[-1] + 1].all())
        return contiguous and (kind == "interval" or bool(ones[-1] == len(order) - 1))
    if kind == "rectangle":
        lo, hi = pts[y == 1].min(0), pts[y == 1].max(0)
        inside = ((pts >= lo) & (pts <= hi)).all(1)
        return not bool((inside & (y == 0)).any())
    if kind == "halfplane":
        if y.all():
            return True
        s = 2 * y - 1  # feasibility of s_i (w.x_i + b) >= 1
        A = -s[:, None] * np.hstack([pts, np.ones((len(pts), 1))])
        res = linprog(np.zeros(3), A_ub=A, b_ub=-np.ones(len(pts)), bounds=[(None, None)] * 3, method="highs")
        return res.status == 0
    raise ValueError(f"kind must be one of {KINDS}")


def shatters(kind: str, points: np.ndarray) -> bool:
    """Every one of the 2^n labellings of ``points`` is realizable."""
    n = len(points)
    return all(realizable(kind, points, labels) for labels in itertools.product((0, 1), repeat=n))


def _unrealizable(kind: str, points: np.ndarray) -> tuple[int, ...] | None:
    for labels in itertools.product((0, 1), repeat=len(points)):
        if not realizable(kind, points, labels):
            return labels
    return None


def vc_dimension(kind: str, pool: np.ndarray, max_d: int = 6) -> dict:
    """The VC dimension of ``kind`` as found by exhaustive search over subsets of ``pool``, with a certificate.

    Returns ``{"d", "shattered", "evidence"}``: ``shattered`` is a subset of size d that is shattered, and
    ``evidence`` lists, for every subset of size d + 1 of the pool, one labelling (tuple of 0/1) that the
    class cannot realize: ``[(indices, labels), ...]``. d is the largest size for which a shattered subset
    of the pool exists (searched up to ``max_d``).
    """
    pool = np.asarray(pool, dtype=float)
    best, witness = 0, np.empty((0, *pool.shape[1:]))
    for size in range(1, min(max_d, len(pool)) + 1):
        found = next((idx for idx in itertools.combinations(range(len(pool)), size) if shatters(kind, pool[list(idx)])),
                     None)
        if found is None:
            break
        best, witness = size, pool[list(found)]
    evidence = []
    for idx in itertools.combinations(range(len(pool)), best + 1):
        evidence.append((list(idx), list(_unrealizable(kind, pool[list(idx)]))))
    return {"d": best, "shattered": witness, "evidence": evidence}


def pac_sample_size(epsilon: float, delta: float, *, h_size: int | None = None, vc_dim: int | None = None,
                    realizable: bool = True) -> int:
    """Samples that suffice to learn to error <= epsilon with probability >= 1 - delta.

    Finite class (``h_size`` = |H|): realizable, any consistent learner: ceil((ln|H| + ln(1/delta)) / epsilon);
    agnostic, ERM (Hoeffding + union bound): ceil((ln|H| + ln(2/delta)) / (2 epsilon^2)).
    VC class (``vc_dim`` = d): realizable (Blumer et al. 1989): ceil((4 log2(2/delta) + 8 d log2(13/epsilon))
    / epsilon); agnostic (Anthony & Bartlett 1999, Thm 4.9): ceil(64/epsilon^2 (2d ln(12/epsilon) + ln(4/delta))).
    """
    if not (0 < epsilon < 1 and 0 < delta < 1):
        raise ValueError("need 0 < epsilon < 1 and 0 < delta < 1")
    if (h_size is None) == (vc_dim is None):
        raise ValueError("give exactly one of h_size and vc_dim")
    if h_size is not None:
        if realizable:
            return math.ceil((math.log(h_size) + math.log(1 / delta)) / epsilon)
        return math.ceil((math.log(h_size) + math.log(2 / delta)) / (2 * epsilon**2))
    if realizable:
        return math.ceil((4 * math.log2(2 / delta) + 8 * vc_dim * math.log2(13 / epsilon)) / epsilon)
    return math.ceil(64 / epsilon**2 * (2 * vc_dim * math.log(12 / epsilon) + math.log(4 / delta)))


def polyfit_predict(degree: int, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """Least-squares polynomial of ``degree`` fitted to each row of (T, n) training sets, predicted at x_test
    (m,): (T, m). Uses a Legendre-scaled Vandermonde basis on [-1, 1] for conditioning."""
    V = np.polynomial.legendre.legvander
    out = np.empty((len(x_train), len(x_test)))
    for t in range(len(x_train)):
        coef, *_ = np.linalg.lstsq(V(2 * x_train[t] - 1, degree), y_train[t], rcond=None)
        out[t] = V(2 * x_test - 1, degree) @ coef
    return out


def bias_variance(degree: int, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, f_test: np.ndarray,
                  y_test: np.ndarray, noise_var: float) -> dict[str, float]:
    """Monte Carlo bias-variance decomposition of polynomial regression over T training sets.

    x_train, y_train (T, n): T independent training sets; x_test (m,) test inputs with true values f_test
    (m,); y_test (T, m): fresh noisy labels for each training set's predictions. Returns bias2 =
    mean_x (mean_D yhat - f)^2, variance = mean_x var_D yhat (population variance, ddof 0), noise = noise_var,
    mse = mean over D and x of (yhat - y_test)^2, and mse_se, the Monte Carlo standard error of mse.
    """
    pred = polyfit_predict(degree, x_train, y_train, x_test)  # (T, m)
    bias2 = float(((pred.mean(0) - f_test) ** 2).mean())
    variance = float(pred.var(0).mean())
    per_set = ((pred - y_test) ** 2).mean(1)  # one mean squared error per training set: independent draws
    return {"bias2": bias2, "variance": variance, "noise": float(noise_var), "mse": float(per_set.mean()),
            "mse_se": float(per_set.std(ddof=1) / math.sqrt(len(per_set)))}


def min_norm_fit(features: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The minimum-norm least-squares weights w = pinv(features) y: the interpolating solution of smallest
    norm when there are more features than samples, ordinary least squares otherwise."""
    return np.linalg.pinv(features) @ y


def random_features(x: np.ndarray, W: np.ndarray) -> np.ndarray:
    """ReLU random features relu(x W) / sqrt(p) of inputs (n, d) with a fixed (d, p) matrix W."""
    return np.maximum(x @ W, 0) / math.sqrt(W.shape[1])
