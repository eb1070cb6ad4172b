"""The analytic Gaussian mechanism (Balle and Wang 2018): the exact (epsilon, delta) of adding N(0, sigma^2)
noise to a query of L2 sensitivity ``sensitivity``, and the smallest sigma for a target (epsilon, delta).

delta(eps) = Phi(D / (2 sigma) - eps sigma / D) - e^eps Phi(-D / (2 sigma) - eps sigma / D), their Theorem 8;
it falls as sigma grows, so the calibration is a bisection. The classical calibration
sigma = D sqrt(2 log(1.25 / delta)) / eps (valid for eps < 1) adds more noise than needed."""

from __future__ import annotations

import math

from scipy import special


def delta_for(sigma: float, eps: float, sensitivity: float = 1.0) -> float:
    """The smallest delta for which the mechanism is (eps, delta)-DP."""
    if sigma <= 0 or eps < 0:
        raise ValueError("need sigma > 0 and eps >= 0")
    a, b = sensitivity / (2 * sigma), eps * sigma / sensitivity
    # e^eps Phi(-a - b) in log space, so that large eps does not overflow
    return float(special.ndtr(a - b) - math.exp(eps + special.log_ndtr(-a - b)))


def calibrate(eps: float, delta: float, sensitivity: float = 1.0, tol: float = 1e-12) -> float:
    """The smallest sigma with delta_for(sigma, eps) <= delta."""
    if eps <= 0 or not 0 < delta < 1:
        raise ValueError("need eps > 0 and 0 < delta < 1")
    lo, hi = 1e-6 * sensitivity, sensitivity
    while delta_for(hi, eps, sensitivity) > delta:
        lo, hi = hi, 2 * hi
    while hi - lo > tol * hi:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if delta_for(mid, eps, sensitivity) > delta else (lo, mid)
    return hi


def classical_sigma(eps: float, delta: float, sensitivity: float = 1.0) -> float:
    """Dwork and Roth's sigma = D sqrt(2 log(1.25 / delta)) / eps (for eps < 1), for comparison."""
    return sensitivity * math.sqrt(2 * math.log(1.25 / delta)) / eps
