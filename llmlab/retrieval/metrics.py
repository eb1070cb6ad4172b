"""How retrieval is judged: recall of the exact neighbours (for approximate indexes), recall of a gold
passage (for questions), reciprocal rank fusion, and the Pareto front of a speed/quality trade-off."""

from __future__ import annotations

import numpy as np


def neighbour_recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found_i ∩ truth_i| / |truth_i|: the fraction of the exact top-k an index returns
    in its own top-k (both (n_queries, k) id arrays; -1 pads a short list and never counts)."""
    found, truth = np.asarray(found), np.asarray(truth)
    hits = [len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist())) / max(1, int((t >= 0).sum()))
            for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits)) if hits else 0.0


def gold_recall(found: np.ndarray, gold: np.ndarray, k: int) -> float:
    """Recall@k of one gold passage per query: the fraction of queries whose gold id is in their first k."""
    found, gold = np.asarray(found)[:, :k], np.asarray(gold)
    return float((found == gold[:, None]).any(axis=1).mean()) if len(gold) else 0.0


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
