"""Product quantization (Jégou et al. 2011): a vector cut into m sub-vectors, each replaced by the index of
its nearest of 2^nbits centroids, so a 384-float vector (1,536 bytes) becomes m bytes; distances from an
uncompressed query to the codes come from a (m, 2^nbits) table (asymmetric distance computation)."""

from __future__ import annotations

import numpy as np


def split(x: np.ndarray, m: int) -> np.ndarray:
    """(n, d) -> (n, m, d/m)."""
    n, d = x.shape
    if d % m:
        raise ValueError(f"dimension {d} is not a multiple of m={m}")
    return x.reshape(n, m, d // m)


def train(x: np.ndarray, m: int, nbits: int = 8, iters: int = 20, seed: int = 0) -> np.ndarray:
    """Codebooks (m, 2^nbits, d/m): k-means (FAISS's) on each sub-vector space."""
    import faiss

    sub = split(np.ascontiguousarray(x, dtype=np.float32), m)
    books = []
    for j in range(m):
        km = faiss.Kmeans(sub.shape[2], 2 ** nbits, niter=iters, seed=seed + j, verbose=False)
        km.train(np.ascontiguousarray(sub[:, j]))
        books.append(km.centroids)
    return np.stack(books)


def quantize(x: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """Codes (n, m): each sub-vector's nearest centroid (squared L2), in chunks of rows to bound memory."""
    sub = split(np.asarray(x), codebooks.shape[0])
    codes = np.empty(sub.shape[:2], dtype=np.int64)
    for i in range(0, len(sub), 256):
        d2 = ((sub[i:i + 256, :, None, :] - codebooks[None]) ** 2).sum(-1)  # (rows, m, ksub)
        codes[i:i + 256] = d2.argmin(-1)
    return codes


def reconstruct(codes: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """The reconstruction (n, d): each code's centroid, sub-vectors side by side."""
    m = codebooks.shape[0]
    return codebooks[np.arange(m)[None, :], codes].reshape(len(codes), -1)


def asymmetric_distances(query: np.ndarray, codes: np.ndarray, codebooks: np.ndarray, metric: str = "l2") -> np.ndarray:
    """Asymmetric distances from one uncompressed query to every code: squared L2 (``metric="l2"``) or inner
    product (``"ip"``), through one table of query-to-centroid terms, m lookups per code."""
    q = split(np.asarray(query)[None], codebooks.shape[0])[0]  # (m, dsub)
    if metric == "l2":
        table = ((codebooks - q[:, None, :]) ** 2).sum(-1)  # (m, ksub)
    elif metric == "ip":
        table = (codebooks * q[:, None, :]).sum(-1)
    else:
        raise ValueError(f"metric must be l2 or ip, not {metric!r}")
    return table[np.arange(codebooks.shape[0])[None, :], codes].sum(1)
