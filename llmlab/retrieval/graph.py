"""Graph search as HNSW does it (Malkov & Yashunin 2018): a greedy best-first walk over a proximity graph,
keeping the ``ef`` closest nodes seen; upper layers are walked with ef=1 to find the entry of the next."""

from __future__ import annotations

import heapq

import numpy as np


def distances(vectors: np.ndarray, ids, query: np.ndarray, metric: str) -> np.ndarray:
    v = vectors[np.asarray(ids, dtype=np.int64)]
    if metric == "l2":
        return ((v - query) ** 2).sum(-1)
    if metric == "ip":
        return -(v @ query)  # a larger inner product is a smaller distance
    raise ValueError(f"metric must be l2 or ip, not {metric!r}")


def search_layer(graph, vectors: np.ndarray, query: np.ndarray, entries: list[int], ef: int,
                 metric: str = "l2") -> list[tuple[float, int]]:
    """SEARCH-LAYER (the paper's algorithm 2): ``graph[i]`` lists node i's neighbours; from ``entries``, expand
    the closest unexpanded candidate while it is closer than the worst of the ``ef`` best found; returns the
    best (distance, id) pairs, closest first."""
    visited = set(entries)
    d0 = distances(vectors, entries, query, metric)
    candidates = [(float(d), int(i)) for d, i in zip(d0, entries, strict=True)]  # min-heap
    heapq.heapify(candidates)
    best = [(-d, i) for d, i in candidates]  # max-heap of the ef closest
    heapq.heapify(best)
    while len(best) > ef:
        heapq.heappop(best)
    while candidates:
        d, i = heapq.heappop(candidates)
        if d > -best[0][0]:
            break
        fresh = [int(j) for j in graph[i] if j >= 0 and j not in visited]
        visited.update(fresh)
        if not fresh:
            continue
        for dj, j in zip(distances(vectors, fresh, query, metric), fresh, strict=True):
            if len(best) < ef or dj < -best[0][0]:
                heapq.heappush(candidates, (float(dj), j))
                heapq.heappush(best, (-float(dj), j))
                if len(best) > ef:
                    heapq.heappop(best)
    return sorted((-d, i) for d, i in best)


def hnsw_search(layers: list, vectors: np.ndarray, query: np.ndarray, entry: int, ef: int, k: int,
                metric: str = "l2") -> list[int]:
    """K-NN-SEARCH (algorithm 5): ``layers[0]`` is the bottom graph, ``layers[-1]`` the top; a greedy walk
    (ef=1) down to layer 1, then ef=max(ef, k) on layer 0; the k closest ids."""
    ep = [entry]
    for graph in reversed(layers[1:]):
        ep = [search_layer(graph, vectors, query, ep, 1, metric)[0][1]]
    return [i for _, i in search_layer(layers[0], vectors, query, ep, max(ef, k), metric)[:k]]
