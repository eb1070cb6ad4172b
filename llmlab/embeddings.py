"""Geometry of embedding spaces: cosine similarities of pairs of vectors and Mu & Viswanath's isotropy."""

from __future__ import annotations

import torch


def pair_cosines(embeddings, i, j) -> torch.Tensor:
    """cos(W[i_k], W[j_k]) for each pair k of row indices (float64). A zero vector has no direction: its
    cosine with anything is 0, not NaN."""
    W = torch.as_tensor(embeddings, dtype=torch.float64)
    a, b = W[torch.as_tensor(i)], W[torch.as_tensor(j)]
    norms = a.norm(dim=-1) * b.norm(dim=-1)
    return (a * b).sum(-1) / torch.where(norms > 0, norms, 1.0)  # a zero vector's dot products are 0


def cosine_similarities(embeddings, pairs: int = 20000, seed: int = 0) -> torch.Tensor:
    """Cosine similarities of ``pairs`` random pairs of distinct rows (for a histogram)."""
    W = torch.as_tensor(embeddings, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    i = torch.randint(0, len(W), (pairs,), generator=gen)
    j = (i + torch.randint(1, len(W), (pairs,), generator=gen)) % len(W)
    return pair_cosines(W, i, j)


def isotropy(embeddings) -> float:
    """Mu & Viswanath's (2018) isotropy of a set of vectors: min_c Z(c) / max_c Z(c), with Z(c) = sum_w
    exp(c . w) over the unit eigenvectors c of W^T W, taken with both signs (an eigenvector's sign is
    arbitrary, so +c and -c both count). 1 means the vectors point every way equally."""
    W = torch.as_tensor(embeddings, dtype=torch.float64)
    _, vecs = torch.linalg.eigh(W.T @ W)
    Z = torch.cat([torch.exp(W @ vecs).sum(0), torch.exp(-W @ vecs).sum(0)])
    return float(Z.min() / Z.max())
