"""The privacy budget of DP-SGD: Rényi differential privacy of the Poisson-subsampled Gaussian mechanism
(Mironov, Talwar and Zhang 2019), composed over steps, converted to (epsilon, delta), and inverted to the
noise multiplier a budget allows.

One step adds Gaussian noise of standard deviation ``noise`` times the clipping norm to a sum of clipped
per-example gradients, each example in the batch with probability ``sample_rate``. Its RDP at order alpha is
log(A_alpha) / (alpha - 1), with A_alpha = E_{z ~ mu0} [((1 - q) + q mu1(z) / mu0(z))^alpha] for
mu0 = N(0, sigma^2) and mu1 = N(1, sigma^2):

- integer alpha: A = sum_k C(alpha, k) (1 - q)^(alpha - k) q^k exp((k^2 - k) / (2 sigma^2)) (exact);
- fractional alpha: the two-sided series of Mironov et al.'s Section 3.3, summed until its terms are
  below e^-30 of the total.

RDP adds over steps. (epsilon, delta) from RDP uses the conversion of Balle et al. 2020 (Canonne, Kamath and
Steinke 2020): eps = rdp(alpha) + log((alpha - 1) / alpha) - (log delta + log alpha) / (alpha - 1),
minimized over the orders. The default orders are Opacus's.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

DEFAULT_ORDERS = tuple([1 + x / 10 for x in range(1, 100)] + list(range(12, 64)))


def _log_add(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    hi, lo = max(a, b), min(a, b)
    return hi + math.log1p(math.exp(lo - hi))


def _log_sub(a: float, b: float) -> float:
    """log(e^a - e^b) for a >= b."""
    if b == -math.inf:
        return a
    if a == b:
        return -math.inf
    return a + math.log(-math.expm1(b - a))


def _log_a_int(q: float, sigma: float, alpha: int) -> float:
    k = np.arange(alpha + 1)
    terms = (special.gammaln(alpha + 1) - special.gammaln(k + 1) - special.gammaln(alpha - k + 1)
             + k * math.log(q) + (alpha - k) * math.log1p(-q) + (k * k - k) / (2 * sigma**2))
    return float(special.logsumexp(terms))


def _log_erfc(x: float) -> float:
    """log erfc(x) without underflow: erfc(x) = 2 Phi(-x sqrt 2)."""
    return float(special.log_ndtr(-x * math.sqrt(2))) + math.log(2)


def _log_a_frac(q: float, sigma: float, alpha: float) -> float:
    """The series for fractional alpha: A = A0 + A1, each a sum over i >= 0 of binomial terms times a
    Gaussian tail (split at z0 = sigma^2 log(1/q - 1) + 1/2)."""
    log_a0 = log_a1 = -math.inf
    z0 = sigma**2 * math.log(1 / q - 1) + 0.5
    i = 0
    while True:
        coef = special.binom(alpha, i)
        log_coef = math.log(abs(coef))
        j = alpha - i
        log_s0 = (log_coef + i * math.log(q) + j * math.log1p(-q) + (i * i - i) / (2 * sigma**2)
                  + math.log(0.5) + _log_erfc((i - z0) / (math.sqrt(2) * sigma)))
        log_s1 = (log_coef + j * math.log(q) + i * math.log1p(-q) + (j * j - j) / (2 * sigma**2)
                  + math.log(0.5) + _log_erfc((z0 - j) / (math.sqrt(2) * sigma)))
        if coef > 0:
            log_a0, log_a1 = _log_add(log_a0, log_s0), _log_add(log_a1, log_s1)
        else:
            log_a0, log_a1 = _log_sub(log_a0, log_s0), _log_sub(log_a1, log_s1)
        i += 1
        if max(log_s0, log_s1) < -30 and i > alpha:
            return _log_add(log_a0, log_a1)


def rdp_step(sample_rate: float, noise: float, order: float) -> float:
    """RDP at ``order`` of one step of the subsampled Gaussian mechanism."""
    q, sigma = sample_rate, noise
    if not 0 <= q <= 1 or sigma <= 0 or order <= 1:
        raise ValueError("need 0 <= sample_rate <= 1, noise > 0 and order > 1")
    if q == 0:
        return 0.0
    if q == 1:
        return order / (2 * sigma**2)
    if np.isinf(order):
        return math.inf
    log_a = _log_a_int(q, sigma, int(order)) if float(order).is_integer() else _log_a_frac(q, sigma, order)
    return log_a / (order - 1)


def rdp(sample_rate: float, noise: float, steps: int, orders=DEFAULT_ORDERS) -> np.ndarray:
    """RDP of ``steps`` compositions, at each order."""
    return np.array([steps * rdp_step(sample_rate, noise, a) for a in orders])


def rdp_to_dp(orders, rdp_values, delta: float) -> tuple[float, float]:
    """(epsilon, the order that gives it) for ``delta``."""
    if not 0 < delta < 1:
        raise ValueError("delta must be in (0, 1)")
    a, r = np.asarray(orders, dtype=float), np.asarray(rdp_values, dtype=float)
    eps = r + np.log((a - 1) / a) - (math.log(delta) + np.log(a)) / (a - 1)
    best = int(np.nanargmin(eps))
    return float(max(eps[best], 0.0)), float(a[best])


def epsilon(noise: float, sample_rate: float, steps: int, delta: float, orders=DEFAULT_ORDERS) -> tuple[float, float]:
    """(epsilon, best order) of DP-SGD with this noise multiplier, sampling rate and number of steps."""
    return rdp_to_dp(orders, rdp(sample_rate, noise, steps, orders), delta)


def noise_for_epsilon(target: float, sample_rate: float, steps: int, delta: float, orders=DEFAULT_ORDERS,
                      tol: float = 1e-4) -> float:
    """The smallest noise multiplier whose epsilon is at most ``target`` (bisection; epsilon falls as the
    noise grows)."""
    if target <= 0:
        raise ValueError("epsilon must be positive")
    lo, hi = 1e-2, 1.0
    while epsilon(hi, sample_rate, steps, delta, orders)[0] > target:
        lo, hi = hi, 2 * hi
        if hi > 1e6:
            raise ValueError("no noise multiplier up to 1e6 reaches that epsilon")
    while hi - lo > tol * hi:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if epsilon(mid, sample_rate, steps, delta, orders)[0] > target else (lo, mid)
    return hi
