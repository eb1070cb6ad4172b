"""Linear algebra for LLMs (lab m01): batched SVD, projections, Eckart-Young, einsum and QKV attention.

The SVD is a one-sided (Hestenes) Jacobi method, vectorised over the batch and, within a sweep, over
disjoint column pairs (round-robin ordering). Jacobi keeps high relative accuracy on ill-conditioned input,
which is why it is the reference here rather than ``A^T A`` eigenvalues (which square the condition number).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _round_robin(n: int) -> list[tuple[Tensor, Tensor]]:
    """n-1 rounds (n even) of n/2 disjoint pairs covering every pair (i, j) once: the circle method."""
    players = list(range(n))
    rounds = []
    for _ in range(n - 1):
        half = n // 2
        p = [players[i] for i in range(half)]
        q = [players[n - 1 - i] for i in range(half)]
        rounds.append((torch.tensor(p), torch.tensor(q)))
        players = [players[0], players[-1], *players[1:-1]]
    return rounds


def batched_svd(A: Tensor, max_sweeps: int = 60) -> tuple[Tensor, Tensor, Tensor]:
    """Reduced SVD of every matrix in a stack ``A`` of shape (..., m, n), any m and n.

    Returns ``U`` (..., m, k), ``S`` (..., k) and ``Vh`` (..., k, n) with k = min(m, n), such that
    ``A = U @ diag(S) @ Vh``; ``S`` is non-negative and descending, ``U`` and ``Vh`` have orthonormal
    columns/rows (also for rank-deficient input, where the extra singular vectors complete the basis).
    Do not call ``torch.linalg.svd``.
    """
    if A.shape[-2] < A.shape[-1]:  # wide: decompose the transpose
        U, S, Vh = batched_svd(A.mT, max_sweeps)
        return Vh.mT, S, U.mT
    m, n = A.shape[-2:]
    X = A.clone()  # (..., m, n): columns become U * S
    V = torch.eye(n, dtype=A.dtype, device=A.device).expand(*A.shape[:-2], n, n).clone()
    padded = n + (n % 2)  # a phantom column index n pairs with nothing when n is odd
    eps = torch.finfo(A.dtype).eps
    for _ in range(max_sweeps):
        rotated = False
        for p, q in _round_robin(padded):
            keep = (p < n) & (q < n)
            p, q = p[keep], q[keep]
            if p.numel() == 0:
                continue
            xp, xq = X[..., :, p], X[..., :, q]  # (..., m, pairs)
            alpha, beta = (xp * xp).sum(-2), (xq * xq).sum(-2)
            gamma = (xp * xq).sum(-2)
            off = gamma.abs() > eps * torch.sqrt(alpha * beta)
            if not off.any():
                continue
            rotated = True
            g = torch.where(off, gamma, torch.ones_like(gamma))
            zeta = (beta - alpha) / (2 * g)
            t = torch.sign(zeta) / (zeta.abs() + torch.sqrt(1 + zeta * zeta))
            t = torch.where(zeta == 0, torch.ones_like(t), t)
            c = torch.where(off, 1 / torch.sqrt(1 + t * t), torch.ones_like(t))
            s = torch.where(off, c * t, torch.zeros_like(t))
            c, s = c.unsqueeze(-2), s.unsqueeze(-2)
            X[..., :, p], X[..., :, q] = c * xp - s * xq, s * xp + c * xq
            vp, vq = V[..., :, p], V[..., :, q]
            V[..., :, p], V[..., :, q] = c * vp - s * vq, s * vp + c * vq
        if not rotated:
            break
    S = X.norm(dim=-2)  # (..., n)
    order = S.argsort(dim=-1, descending=True)
    S = S.gather(-1, order)
    X = X.gather(-1, order.unsqueeze(-2).expand_as(X))
    V = V.gather(-1, order.unsqueeze(-2).expand_as(V))
    # Householder QR of the (orthogonal, sorted) columns normalises them and completes the basis where S = 0
    Q, R = torch.linalg.qr(X)
    sign = torch.where(R.diagonal(dim1=-2, dim2=-1) < 0, -1.0, 1.0).to(A.dtype)
    return Q * sign.unsqueeze(-2), S, V.mT


def _rank_tol(A: Tensor, S: Tensor) -> Tensor:
    return S[..., :1] * max(A.shape[-2:]) * torch.finfo(A.dtype).eps  # numpy's matrix_rank default


def projector(A: Tensor) -> Tensor:
    """Orthogonal projector onto the column space of each A in (..., m, n): P (..., m, m), P = P^T = P^2,
    P A = A. Rank-deficient A projects onto its true (numerical) column space."""
    U, S, _ = batched_svd(A)
    basis = U * (S > _rank_tol(A, S)).to(A.dtype).unsqueeze(-2)
    return basis @ basis.mT


def low_rank_approx(A: Tensor, k: int) -> Tensor:
    """Best rank-k approximation of each matrix in (..., m, n) in Frobenius and spectral norm
    (Eckart-Young): keep the k largest singular triplets."""
    U, S, Vh = batched_svd(A)
    return (U[..., :, :k] * S[..., None, :k]) @ Vh[..., :k, :]


def discarded_norm(S: Tensor, k: int, norm: str = "fro") -> Tensor:
    """The error ||A - A_k|| predicted by Eckart-Young from the singular values S (..., r) sorted descending:
    sqrt(sum of squares of S[k:]) for ``norm="fro"``, S[k] for ``norm="spectral"`` (0 when k >= r)."""
    tail = S[..., k:]
    if norm == "fro":
        return tail.pow(2).sum(-1).sqrt()
    if norm == "spectral":
        return tail[..., 0] if tail.shape[-1] else S.new_zeros(S.shape[:-1])
    raise ValueError(f"norm must be 'fro' or 'spectral', not {norm!r}")


def bilinear(x: Tensor, W: Tensor, y: Tensor) -> Tensor:
    """Batched bilinear form x_b^T W y_b with einsum: x (B, m), W (m, n), y (B, n) -> (B,)."""
    return torch.einsum("bi,ij,bj->b", x, W, y)


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """Scaled dot-product attention written with ``torch.einsum``.

    q (..., Tq, d), k (..., Tk, d), v (..., Tk, dv) -> (..., Tq, dv). ``mask`` is boolean, broadcastable to
    (..., Tq, Tk), True where a query may attend (the convention of
    ``torch.nn.functional.scaled_dot_product_attention``). Every row must keep at least one key.
    """
    scores = torch.einsum("...qd,...kd->...qk", q, k) / math.sqrt(q.shape[-1])  # (..., Tq, Tk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return torch.einsum("...qk,...kd->...qd", weights, v)


def multihead_attention(x: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor, w_o: Tensor, n_heads: int,
                        mask: Tensor | None = None) -> Tensor:
    """Multi-head self-attention of x (B, T, C). Weights are (C, C) and applied as ``x @ W.T`` (the
    ``nn.Linear`` convention); head h uses channels h*C/H..(h+1)*C/H of q, k, v. ``mask`` is boolean
    (T, T) or (B, 1, T, T), True = may attend. Returns (B, T, C)."""
    B, T, C = x.shape
    split = lambda w: torch.einsum("btc,oc->bto", x, w).reshape(B, T, n_heads, C // n_heads).transpose(1, 2)
    heads = attention(split(w_q), split(w_k), split(w_v), mask)  # (B, H, T, C/H)
    return torch.einsum("btc,oc->bto", heads.transpose(1, 2).reshape(B, T, C), w_o)
