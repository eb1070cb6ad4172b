"""The arithmetic behind the dashboards and alerts, as Prometheus 2.x evaluates it (promql/quantile.go and
promql/functions.go): ``histogram_quantile``'s linear interpolation inside a bucket, ``rate``/``increase``
with counter resets and extrapolation to the window's edges, and the SLO burn rate with the multi-window
alert rule of the Google SRE workbook."""

from __future__ import annotations

import math
from collections.abc import Sequence

INF = float("inf")


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """The q-quantile of a histogram given as (upper bound ``le``, cumulative count) pairs, the +Inf bucket
    included. As Prometheus does: NaN without a +Inf bucket, with fewer than two buckets or no observations;
    -Inf for q < 0 and +Inf for q > 1; buckets with the same bound merged and counts forced monotonic; the
    rank q x total located in the first bucket whose count reaches it and interpolated linearly between that
    bucket's bounds (the lowest bucket starts at 0 unless its bound is <= 0, which is returned as is); a rank
    in the +Inf bucket returns the largest finite bound."""
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -INF
    if q > 1:
        return INF
    merged: dict[float, float] = {}
    for le, count in buckets:
        merged[float(le)] = merged.get(float(le), 0.0) + float(count)
    bs = sorted(merged.items())
    if len(bs) < 2 or bs[-1][0] != INF:
        return math.nan
    running = -INF
    bs = [(le, running := max(running, c)) for le, c in bs]  # monotonic: a later bucket never counts less
    total = bs[-1][1]
    if total == 0 or math.isnan(total):
        return math.nan
    rank = q * total
    b = next(i for i, (_, c) in enumerate(bs[:-1] + [(INF, INF)]) if c >= rank)
    if b == len(bs) - 1:
        return bs[-2][0]
    if b == 0 and bs[0][0] <= 0:
        return bs[0][0]
    start, end, count = 0.0, bs[b][0], bs[b][1]
    if b > 0:
        start = bs[b - 1][0]
        count -= bs[b - 1][1]
        rank -= bs[b - 1][1]
    return start + (end - start) * (rank / count if count else math.nan)  # Go's 0/0: an empty bucket at rank 0


def extrapolated_delta(samples: Sequence[tuple[float, float]], start: float, end: float, counter: bool = True,
                       per_second: bool = True) -> float:
    """``rate`` (per_second) or ``increase`` of a counter, or ``delta`` of a gauge (counter=False), over the
    window [start, end] (seconds) from its samples (t, v) in that window, time-ordered. A counter's drop is a
    reset: the value before it is added back. The change between the first and the last sample is extrapolated
    to the window's edges when they lie within 1.1 average sample intervals (else by half an interval), never
    before the counter's extrapolated zero; NaN with fewer than two samples."""
    if len(samples) < 2:
        return math.nan
    (t0, v0), (tn, vn) = samples[0], samples[-1]
    result = vn - v0
    if counter:
        last = 0.0
        for _, v in samples:
            if v < last:
                result += last
            last = v
    to_start, to_end = t0 - start, end - tn
    sampled = tn - t0
    average = sampled / (len(samples) - 1)
    if counter and result > 0 and v0 >= 0:
        to_start = min(to_start, sampled * (v0 / result))
    threshold = average * 1.1
    interval = sampled + (to_start if to_start < threshold else average / 2) + (to_end if to_end < threshold
                                                                                   else average / 2)
    result *= interval / sampled
    return result / (end - start) if per_second else result


def burn_rate(error_ratio: float, objective: float) -> float:
    """How fast the error budget burns: the error ratio over the budget 1 - objective (1 spends exactly the
    budget over the SLO window)."""
    return error_ratio / (1 - objective)


BURN_ALERTS = (("page", "1h", "5m", 14.4), ("page", "6h", "30m", 6.0), ("ticket", "3d", "6h", 1.0))


def burn_alerts(error_ratios: dict[str, float], objective: float) -> list[str]:
    """The alerts that fire, as "severity long/short": each pair of windows fires when the burn rate over both
    exceeds its factor (the SRE workbook's multi-window, multi-burn-rate alerts; llmlab's SLO rules)."""
    return [f"{sev} {long}/{short}" for sev, long, short, factor in BURN_ALERTS
            if burn_rate(error_ratios[long], objective) > factor and burn_rate(error_ratios[short], objective) > factor]
