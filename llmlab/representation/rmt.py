"""Random-matrix spectra: the empirical spectral density (ESD) of a weight matrix against the
Marchenko-Pastur law (Marchenko & Pastur 1967), a symmetric random matrix against Wigner's semicircle, and
the power-law exponent of a heavy-tailed ESD (Martin & Mahoney 2021) by Clauset et al.'s (2009) maximum
likelihood with the KS-minimizing lower cut."""

from __future__ import annotations

import numpy as np


def esd(w: np.ndarray) -> np.ndarray:
    """The eigenvalues of the correlation matrix WᵀW / n of an (n, p) matrix (n >= p, transposed if not),
    ascending: what the Marchenko-Pastur law describes, with aspect ratio q = p / n."""
    w = np.asarray(w, dtype=np.float64)
    w = w if w.shape[0] >= w.shape[1] else w.T
    return np.linalg.eigvalsh(w.T @ w / w.shape[0])


def mp_edges(q: float, sigma2: float = 1.0) -> tuple[float, float]:
    """The support [λ-, λ+] = σ²(1 ∓ √q)² of the Marchenko-Pastur law."""
    return sigma2 * (1 - np.sqrt(q)) ** 2, sigma2 * (1 + np.sqrt(q)) ** 2


def marchenko_pastur_pdf(x, q: float, sigma2: float = 1.0) -> np.ndarray:
    """The density of the ESD of WᵀW / n, W (n, p) with i.i.d. entries of variance σ², as n, p -> ∞ with
    p / n -> q in (0, 1]: √((λ+ − x)(x − λ-)) / (2π σ² q x) on the support, 0 outside."""
    x = np.asarray(x, dtype=np.float64)
    lo, hi = mp_edges(q, sigma2)
    inside = (x > lo) & (x < hi)
    safe = np.where(inside, x, 1.0)
    return np.where(inside, np.sqrt(np.clip((hi - safe) * (safe - lo), 0, None)) / (2 * np.pi * sigma2 * q * safe), 0.0)


def marchenko_pastur_cdf(x, q: float, sigma2: float = 1.0, grid: int = 4096) -> np.ndarray:
    """The law's distribution function. With x = λ- + (λ+ − λ-)(1 − cos t)/2 the integrand (density times
    dx/dt) is smooth on [0, π], even where the density diverges at λ- = 0 (q = 1), so the midpoint rule on a
    uniform grid in t is accurate to ~1e-9."""
    lo, hi = mp_edges(q, sigma2)
    t = np.linspace(0, np.pi, grid + 1)
    mid = (t[1:] + t[:-1]) / 2
    xm = lo + (hi - lo) * (1 - np.cos(mid)) / 2
    dxdt = (hi - lo) / 2 * np.sin(mid)
    g = np.sqrt((hi - xm) * (xm - lo)) * dxdt / (2 * np.pi * sigma2 * q * xm)
    cdf = np.concatenate([[0.0], np.cumsum(g * np.diff(t))])
    return np.interp(np.asarray(x, dtype=np.float64), lo + (hi - lo) * (1 - np.cos(t)) / 2, cdf / cdf[-1])


def wigner_pdf(x, sigma: float = 1.0) -> np.ndarray:
    """Wigner's semicircle: the ESD of a symmetric matrix with off-diagonal entries of variance σ²/n,
    √(4σ² − x²) / (2π σ²) on [−2σ, 2σ]."""
    x = np.asarray(x, dtype=np.float64)
    return np.sqrt(np.clip(4 * sigma**2 - x**2, 0, None)) / (2 * np.pi * sigma**2)


def wigner_cdf(x, sigma: float = 1.0) -> np.ndarray:
    u = np.clip(np.asarray(x, dtype=np.float64) / sigma, -2, 2)
    return 0.5 + u * np.sqrt(4 - u**2) / (4 * np.pi) + np.arcsin(u / 2) / np.pi


def goe(n: int, rng: np.random.Generator) -> np.ndarray:
    """A symmetric n x n Gaussian matrix scaled so its ESD tends to the unit semicircle."""
    a = rng.standard_normal((n, n))
    return (a + a.T) / np.sqrt(2 * n)


def ks_distance(samples: np.ndarray, cdf) -> float:
    """sup |F_empirical − F| over the samples (both sides of each step)."""
    s = np.sort(np.asarray(samples, dtype=np.float64))
    f = cdf(s)
    n = len(s)
    return float(max(np.max(np.arange(1, n + 1) / n - f), np.max(f - np.arange(n) / n)))


def power_law_alpha(x: np.ndarray, xmin: float) -> float:
    """The maximum-likelihood exponent of a continuous power law p(x) ∝ x^-α for x >= xmin (Clauset et al.
    2009, eq. 3.1): α = 1 + n / Σ ln(x_i / xmin) over the n samples at or above xmin."""
    tail = np.asarray(x, dtype=np.float64)
    tail = tail[tail >= xmin]
    return float(1 + len(tail) / np.sum(np.log(tail / xmin)))


def fit_power_law(x: np.ndarray, min_tail: int = 10, candidates: int = 500) -> dict:
    """α with the lower cut xmin that minimizes the KS distance between the tail and the fitted law
    (Clauset et al. 2009, section 3.3), over tails of at least ``min_tail`` samples (at most ``candidates``
    cuts, evenly spaced in rank)."""
    s = np.sort(np.asarray(x, dtype=np.float64))
    s = s[s > 0]
    best = None
    for i in np.unique(np.linspace(0, max(0, len(s) - min_tail), candidates).astype(int)):
        xmin, tail = s[i], s[i:]
        alpha = power_law_alpha(tail, xmin)
        ks = ks_distance(tail, lambda t, a=alpha, m=xmin: 1 - (t / m) ** (1 - a))
        if best is None or ks < best["ks"]:
            best = {"alpha": alpha, "xmin": float(xmin), "ks": ks, "tail": len(tail)}
    return best
