"""How retrieval is judged: recall@k (of the exact neighbours, for approximate indexes; of a gold passage,
for questions), reciprocal rank fusion, and the Pareto front of a speed/quality trade-off."""

from __future__ import annotations

import numpy as np


def recall_at_k(retrieved, relevant, k: int) -> float:
    """Mean over queries of |first k retrieved ∩ relevant| / |relevant|: with the exact top-k as the relevant
    set, the fraction of the true neighbours an approximate index finds; with one gold passage, the fraction
    of questions whose passage comes back. Rows are id sequences (arrays or lists; ids < 0 pad and never
    count); queries without relevant ids are left out."""
    scores = []
    for found, want in zip(retrieved, relevant, strict=True):
        want = {int(i) for i in np.asarray(want).ravel() if i >= 0}
        if want:
            top = {int(i) for i in np.asarray(found).ravel()[:k] if i >= 0}
            scores.append(len(top & want) / len(want))
    return float(np.mean(scores)) if scores else 0.0


def rrf(rankings: list[np.ndarray], k: int = 60, depth: int | None = None) -> np.ndarray:
    """Reciprocal rank fusion (Cormack et al. 2009): each id scores sum over rankings of 1 / (k + rank), rank
    from 1; per query the ids by falling fused score (ties: the smaller id first), ``depth`` of them (-1 pads)."""
    n = len(rankings[0])
    depth = depth or max(r.shape[1] for r in rankings)
    out = np.full((n, depth), -1, dtype=np.int64)
    for q in range(n):
        scores: dict[int, float] = {}
        for ranking in rankings:
            for rank, i in enumerate(ranking[q].tolist(), start=1):
                if i >= 0:
                    scores[i] = scores.get(i, 0.0) + 1.0 / (k + rank)
        best = sorted(scores, key=lambda i: (-scores[i], i))[:depth]
        out[q, :len(best)] = best
    return out


def pareto(points: list[tuple[float, float]]) -> set[int]:
    """Indices of the points no other point beats: none with lower-or-equal cost and higher-or-equal value,
    better in one (cost first, value second of each pair)."""
    front = set()
    for i, (c, v) in enumerate(points):
        if not any((c2 <= c and v2 >= v) and (c2 < c or v2 > v) for c2, v2 in points):
            front.add(i)
    return front
