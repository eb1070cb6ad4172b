"""The figures of an inference benchmark, from per-request timings: throughput and latency percentiles."""

from __future__ import annotations

import numpy as np


def benchmark_summary(starts, ends, tokens) -> dict[str, float]:
    """Requests ``k`` ran from ``starts[k]`` to ``ends[k]`` (seconds) and generated ``tokens[k]`` tokens.

    Throughput is over the run's wall time (first start to last end), not a mean of per-request rates;
    latency percentiles interpolate linearly between order statistics (NumPy's default, as Locust and
    Prometheus's histogram_quantile approximate)."""
    starts, ends, tokens = (np.asarray(a, dtype=np.float64) for a in (starts, ends, tokens))
    if not (len(starts) == len(ends) == len(tokens)) or len(starts) == 0:
        raise ValueError("starts, ends and tokens must be non-empty and of one length")
    if np.any(ends < starts):
        raise ValueError("a request ends before it starts")
    wall = float(ends.max() - starts.min())
    latency = ends - starts
    return {"requests": float(len(starts)), "wall_s": wall, "tokens_per_s": float(tokens.sum()) / wall,
            "requests_per_s": len(starts) / wall, "mean_latency_s": float(latency.mean()),
            **{f"p{q}_latency_s": float(np.percentile(latency, q)) for q in (50, 95, 99)}}
