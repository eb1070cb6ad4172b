"""Lab m19: monitoring, logging and observability. PromQL's histogram_quantile and rate as Prometheus
evaluates them, SLO burn rates with multi-window alerts, and the drift statistics (PSI, KS); the deliverable
serves a model, exports Triton-format and llmlab metrics through one exporter, scores the served traffic for
perplexity drift and watches a real Prometheus fire the drift alert when the traffic changes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from llmlab.labs.base import CheckContext, CheckFailed, Lab, LabLimits
from llmlab.monitoring import drift, promql

LAB = Lab("m19", module=__name__, reference="llmlab.monitoring.promql",
          spec=["histogram_quantile", "extrapolated_delta", "burn_rate", "burn_alerts", "llmlab.monitoring.drift:psi",
                "llmlab.monitoring.drift:ks_statistic"],
          limits=LabLimits(call_timeout_s=30, total_timeout_s=180, memory_mb=1024),
          own_work="histogram quantiles, counter rates with resets and extrapolation, burn rates and the "
                   "multi-window rule, PSI and the two-sample KS statistic, from Python and numpy",
          forbidden=("scipy.stats", "prometheus_api_client", "promql_parser"))


def _same(ctx: CheckContext, got, want: float, what: str, tol: float = 1e-9) -> None:
    """A float result: equal to ``want`` within ``tol`` (relative to its size), or the same NaN / infinity
    where Prometheus gives one."""
    if isinstance(got, np.floating | np.integer):
        got = float(got)
    if isinstance(got, bool) or not isinstance(got, int | float):
        raise CheckFailed(f"{what}: a {type(got).__name__}, expected a float")
    if math.isnan(want):
        ctx.expect(math.isnan(got), f"{what}: {got!r}, expected NaN (as Prometheus gives)")
    elif math.isinf(want):
        ctx.expect(got == want, f"{what}: {got!r}, expected {want!r}")
    else:
        ctx.close(ctx.number(got, what), want, atol=tol * max(1.0, abs(want)), what=what)


def _histogram(ctx: CheckContext, kind: int):
    bounds = sorted(set(np.round(ctx.rng.uniform(0.001, 10, ctx.randint(2, 8)), 3).tolist()))
    counts = np.cumsum(ctx.rng.integers(0, 15, len(bounds) + 1)).astype(float)
    buckets = [*zip(bounds, counts[:-1].tolist(), strict=True), (math.inf, float(counts[-1]))]
    if kind == 1:
        buckets = [(-0.5, 0.0), (0.0, float(ctx.randint(0, 3))), *[(b, c + 3) for b, c in buckets]]
    elif kind == 2 and len(buckets) > 2:  # a repeated bound and a count that dips (a scrape race)
        buckets = [*buckets, (buckets[0][0], 1.0)]
        buckets[1] = (buckets[1][0], max(0.0, buckets[1][1] - 2))
    elif kind == 3:
        buckets = buckets[:-1]  # no +Inf bucket
    elif kind == 4:
        buckets[-1] = (math.inf, buckets[-1][1] + 40)  # most observations beyond the last bound
    order = ctx.rng.permutation(len(buckets))
    return [buckets[i] for i in order]  # in any order, as label sets come


@LAB.check(points=3, grades="a dashboard of tokens/s and p95 latency")
def quantiles_from_buckets(ctx: CheckContext):
    """histogram_quantile(q, buckets): ``buckets`` a list of (le, cumulative count) in any order, +Inf
    included; Prometheus's result: NaN without a +Inf bucket, with under two buckets or no observations;
    -inf / +inf for q < 0 / q > 1; equal bounds merged and counts made monotonic; linear interpolation inside
    the bucket where the rank q x total falls (from 0 for the lowest bucket unless its bound is <= 0, which is
    returned as is); the largest finite bound when the rank falls in +Inf (1e-9)."""
    for trial in range(10):
        buckets = _histogram(ctx, trial % 5)
        for q in (ctx.choice([0.5, 0.9, 0.95, 0.99]), ctx.rng.uniform(0, 1), ctx.choice([0.0, 1.0, -0.1, 1.2])):
            _same(ctx, ctx.call("histogram_quantile", q, buckets), promql.histogram_quantile(q, buckets),
                  f"histogram_quantile({q:.3g}) of {len(buckets)} buckets (trial {trial})")


def _counter(ctx: CheckContext, n: int) -> list[tuple[float, float]]:
    t = np.cumsum(ctx.rng.uniform(5, 20, n)) + ctx.rng.uniform(0, 30)
    v = np.cumsum(ctx.rng.integers(0, 50, n)).astype(float) + ctx.randint(0, 100)
    for _ in range(ctx.randint(0, 3)):  # restarts: the counter starts over from a small value
        i = ctx.randint(1, n)
        v[i:] = v[i:] - v[i] + ctx.randint(0, 5)
    return list(zip(t.round(3).tolist(), v.tolist(), strict=True))


@LAB.check(points=3, grades="a Prometheus exporter of inference metrics")
def counter_rates(ctx: CheckContext):
    """extrapolated_delta(samples, start, end, counter=True, per_second=True): Prometheus's rate (per_second),
    increase, or a gauge's delta (counter=False) over [start, end] from the window's samples (t, v): resets
    (drops) add back the value before them; the first-to-last change is extrapolated to each edge closer than
    1.1 mean sample intervals (else by half an interval), a counter never before its extrapolated zero; NaN with
    fewer than two samples (1e-9 relative)."""
    for trial in range(8):
        samples = _counter(ctx, ctx.randint(2, 25))
        start = samples[0][0] - ctx.rng.uniform(0, 40)
        end = samples[-1][0] + ctx.rng.uniform(0, 40)
        counter, per_second = trial % 4 != 3, trial % 2 == 0
        got = ctx.call("extrapolated_delta", samples, start, end, counter, per_second)
        _same(ctx, got, promql.extrapolated_delta(samples, start, end, counter, per_second),
              f"{'rate' if per_second else 'increase'} of {len(samples)} samples ({'counter' if counter else 'gauge'})")
    _same(ctx, ctx.call("extrapolated_delta", samples[:1], 0.0, 60.0, True, True), math.nan, "one sample")


@LAB.check(points=2, grades="latency SLO violations")
def slo_burn(ctx: CheckContext):
    """burn_rate(error_ratio, objective) = error_ratio / (1 − objective); burn_alerts(error_ratios, objective)
    lists "page 1h/5m", "page 6h/30m", "ticket 3d/6h" (in that order) for each pair of windows whose burn
    rates both exceed 14.4, 6 and 1 respectively (error_ratios maps windows "5m", "30m", "1h", "6h", "3d")."""
    for _ in range(3):
        objective, ratio = ctx.choice([0.9, 0.95, 0.99, 0.999]), ctx.rng.uniform(0, 0.3)
        _same(ctx, ctx.call("burn_rate", ratio, objective), promql.burn_rate(ratio, objective), "burn rate")
    for trial in range(8):
        objective = ctx.choice([0.95, 0.99])
        budget = 1 - objective
        ratios = {w: float(budget * ctx.choice([0.5, 0.99, 1.5, 5.9, 6.1, 14.3, 14.5, 20.0]))
                  for w in ("5m", "30m", "1h", "6h", "3d")}
        got = ctx.call("burn_alerts", ratios, objective)
        want = promql.burn_alerts(ratios, objective)
        ctx.expect(isinstance(got, list) and got == want, f"trial {trial}: alerts {got!r}, expected {want!r} for "
                   f"burn rates { {w: round(r / budget, 2) for w, r in ratios.items()} }")


@LAB.check(points=3, grades="perplexity drift")
def drift_statistics(ctx: CheckContext):
    """psi(reference, current, bins=10): Σ (c − r) ln(c / r) over bins cut at the reference's interior
    quantiles (numpy's default linear quantiles; the outer bins open; a value on an edge goes to the bin
    above it), shares floored at 1e-4; ks_statistic(reference, current): sup |F_ref − F_cur| (1e-9)."""
    for trial in range(6):
        ref = ctx.rng.gamma(2.0, 1.0, ctx.randint(200, 2000))
        cur = ctx.rng.gamma(ctx.rng.uniform(1.5, 3.0), ctx.rng.uniform(0.8, 1.3), ctx.randint(50, 800))
        if trial == 1:
            cur = cur[cur < np.quantile(ref, 0.6)]  # the top bins empty: the floor matters
        if trial == 2:
            ref, cur = np.round(ref, 1), np.round(cur, 1)  # ties on the edges
        bins = ctx.choice([5, 10, 20])
        _same(ctx, ctx.call("psi", ref, cur, bins), drift.psi(ref, cur, bins), f"PSI with {bins} bins (trial {trial})")
        _same(ctx, ctx.call("ks_statistic", ref, cur), drift.ks_statistic(ref, cur), f"KS (trial {trial})")


# --- seeded bugs ---------------------------------------------------------------------------------------------
def quantile_upper_bound(q, buckets):
    """No interpolation: the located bucket's upper bound."""
    value = promql.histogram_quantile(q, buckets)
    if not math.isfinite(value):
        return value
    bounds = sorted({b for b, _ in buckets if b != math.inf})
    return next((b for b in bounds if b >= value - 1e-12), value)


def quantile_inf_bucket_is_inf(q, buckets):
    value = promql.histogram_quantile(q, buckets)
    finite = sorted(b for b, _ in buckets if b != math.inf)
    return math.inf if finite and value == finite[-1] and q > 0.5 else value


def rate_ignores_resets(samples, start, end, counter=True, per_second=True):
    return promql.extrapolated_delta(samples, start, end, False, per_second) if counter else \
        promql.extrapolated_delta(samples, start, end, counter, per_second)


def rate_without_extrapolation(samples, start, end, counter=True, per_second=True):
    if len(samples) < 2:
        return math.nan
    inc = promql.extrapolated_delta(samples, samples[0][0], samples[-1][0], counter, False)
    return inc / (end - start) if per_second else inc


def rate_over_sampled_interval(samples, start, end, counter=True, per_second=True):
    inc = promql.extrapolated_delta(samples, start, end, counter, False)
    return inc / (samples[-1][0] - samples[0][0]) if per_second and len(samples) > 1 else inc


def burn_over_objective(error_ratio, objective):
    return error_ratio / objective


def alerts_on_either_window(error_ratios, objective):
    return [f"{sev} {long}/{short}" for sev, long, short, factor in promql.BURN_ALERTS
            if max(promql.burn_rate(error_ratios[long], objective), promql.burn_rate(error_ratios[short], objective))
            > factor]


def psi_equal_width(reference, current, bins=10):
    lo, hi = float(np.min(reference)), float(np.max(reference))
    edges = np.linspace(lo, hi, bins + 1)[1:-1]
    r = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=bins) / len(reference)
    c = np.bincount(np.searchsorted(edges, current, side="right"), minlength=bins) / len(current)
    r, c = np.maximum(r, drift.PSI_EPS), np.maximum(c, drift.PSI_EPS)
    return float(np.sum((c - r) * np.log(c / r)))


def psi_kl_only(reference, current, bins=10):
    """KL(current || reference) alone: half of the symmetric index."""
    edges = np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1])
    r = np.maximum(np.bincount(np.searchsorted(edges, reference, side="right"), minlength=bins) / len(reference),
                   drift.PSI_EPS)
    c = np.maximum(np.bincount(np.searchsorted(edges, current, side="right"), minlength=bins) / len(current),
                   drift.PSI_EPS)
    return float(np.sum(c * np.log(c / r)))


def ks_one_sided(reference, current):
    a, b = np.sort(reference), np.sort(current)
    grid = np.concatenate([a, b])
    return float(np.max(np.searchsorted(a, grid, side="right") / len(a) - np.searchsorted(b, grid, side="right")
                        / len(b)))


LAB.bug("quantile_upper_bound", histogram_quantile=quantile_upper_bound)
LAB.bug("quantile_inf_bucket_is_inf", histogram_quantile=quantile_inf_bucket_is_inf)
LAB.bug("rate_ignores_resets", extrapolated_delta=rate_ignores_resets)
LAB.bug("rate_without_extrapolation", extrapolated_delta=rate_without_extrapolation)
LAB.bug("rate_over_sampled_interval", extrapolated_delta=rate_over_sampled_interval)
LAB.bug("burn_over_objective", burn_rate=burn_over_objective)
LAB.bug("alerts_on_either_window", burn_alerts=alerts_on_either_window)
LAB.bug("psi_equal_width", psi=psi_equal_width)
LAB.bug("psi_kl_only", psi=psi_kl_only)
LAB.bug("ks_one_sided", ks_statistic=ks_one_sided)


# --- deliverable ---------------------------------------------------------------------------------------------
def run(profile: str, out: Path) -> tuple[dict, str]:
    from llmlab.monitoring import experiment

    return experiment.run(experiment.FULL if profile == "full" else experiment.QUICK, out)
