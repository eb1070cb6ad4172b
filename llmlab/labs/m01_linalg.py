"""Lab m01: linear algebra. Batched SVD (tall, wide, rank-deficient, ill-conditioned), projections,
Eckart-Young, einsum contractions and Q K V attention against PyTorch's fused kernel."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from llmlab import linalg
from llmlab.labs.base import CheckContext, Lab, LabLimits
from llmlab.plots import figure

LAB = Lab(
    "m01", module=__name__, reference="llmlab.linalg",
    spec=["batched_svd", "projector", "low_rank_approx", "discarded_norm", "bilinear", "attention",
          "multihead_attention"],
    limits=LabLimits(call_timeout_s=30, total_timeout_s=240, memory_mb=2048),
    own_work=("the SVD itself (one-sided Jacobi or another algorithm you write), projectors and low-rank truncation "
              "from your SVD, attention from matrix products and einsum"),
    forbidden=("torch.linalg:svd", "torch.linalg:svdvals", "torch:svd", "torch:svd_lowrank", "torch:pca_lowrank",
               "torch:Tensor.svd", "torch.linalg:eig", "torch.linalg:eigh", "torch.linalg:eigvals",
               "torch.linalg:eigvalsh", "torch.linalg:pinv", "torch.linalg:lstsq", "numpy.linalg:svd",
               "numpy.linalg:eig", "numpy.linalg:eigh", "numpy.linalg:pinv", "numpy.linalg:lstsq", "scipy",
               "torch.nn.functional:scaled_dot_product_attention",
               "torch.nn.functional:multi_head_attention_forward", "torch.nn:MultiheadAttention"),
)

RECON_TOL = 1e-6  # relative reconstruction error, float64


def _orthonormal(Q: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(Q.shape[-1], dtype=Q.dtype)
    return (Q.mT @ Q - eye).abs().amax(dim=(-2, -1))


def _conditioned(ctx: CheckContext, batch: int, n: int, cond: float) -> torch.Tensor:
    Q1, _ = torch.linalg.qr(ctx.randn(batch, n, n))
    Q2, _ = torch.linalg.qr(ctx.randn(batch, n, n))
    s = torch.logspace(0, -math.log10(cond), n, dtype=torch.float64)
    return Q1 @ torch.diag_embed(s.expand(batch, n)) @ Q2


def _judge_svd(ctx: CheckContext, A: torch.Tensor, label: str) -> None:
    U, S, Vh = ctx.call("batched_svd", A)
    k = min(A.shape[-2:])
    ctx.expect(tuple(U.shape) == (*A.shape[:-1], k) and tuple(S.shape) == (*A.shape[:-2], k)
               and tuple(Vh.shape) == (*A.shape[:-2], k, A.shape[-1]),
               f"{label}: shapes U{tuple(U.shape)} S{tuple(S.shape)} Vh{tuple(Vh.shape)} for A{tuple(A.shape)}; "
               f"expected the reduced SVD with k={k}")
    recon = (U @ torch.diag_embed(S) @ Vh - A).flatten(-2).norm(dim=-1) / A.flatten(-2).norm(dim=-1)
    worst = int(recon.argmax())
    ctx.expect(float(recon.max()) <= RECON_TOL,
               f"{label}: reconstruction error {float(recon.max()):.3g} at matrix {worst} (limit {RECON_TOL:g})")
    ctx.expect(bool((S >= 0).all()) and bool((S[..., :-1] >= S[..., 1:]).all()),
               f"{label}: singular values must be non-negative and descending")
    ctx.expect(float(_orthonormal(U).max()) <= 1e-6, f"{label}: columns of U are not orthonormal")
    ctx.expect(float(_orthonormal(Vh.mT).max()) <= 1e-6, f"{label}: rows of Vh are not orthonormal")
    ctx.close(S, torch.linalg.svdvals(A), atol=1e-9 * float(A.abs().max()), what=f"{label}: singular values")


@LAB.check(points=3, grades="batched SVD with reconstruction error <= 1e-6")
def svd_any_shape(ctx: CheckContext):
    """Batched SVD of tall, wide and square stacks (random sizes), with extra batch dimensions."""
    m, n = ctx.randint(2, 12), ctx.randint(2, 12)
    _judge_svd(ctx, ctx.randn(3, m + 4, n), "tall")
    _judge_svd(ctx, ctx.randn(2, 2, m, n + 5), "wide")
    _judge_svd(ctx, ctx.randn(4, n, n), "square")


@LAB.check(points=2, grades="batched SVD with reconstruction error <= 1e-6")
def svd_hard_matrices(ctx: CheckContext):
    """Rank-deficient stacks and ill-conditioned matrices (condition number 1e12)."""
    r = ctx.randint(1, 4)
    _judge_svd(ctx, ctx.randn(3, 9, r) @ ctx.randn(3, r, 7), f"rank-{r}")
    _judge_svd(ctx, _conditioned(ctx, 3, 8, 1e12), "ill-conditioned")


@LAB.check(points=2, grades="vector spaces")
def projection(ctx: CheckContext):
    """projector: symmetric, idempotent, fixes the column space, also for rank-deficient A."""
    A = ctx.randn(2, 8, 2) @ ctx.randn(2, 2, 4)  # rank 2 in R^8
    P = ctx.call("projector", A)
    ctx.close(P, linalg.projector(A), atol=1e-8, what="projector of a rank-2 matrix")
    ctx.close(P @ P, P, atol=1e-8, what="P @ P")
    ctx.close(P.mT, P, atol=1e-8, what="P^T")
    b = ctx.randn(2, 8, 1)
    ctx.close(A.mT @ (b - P @ b), torch.zeros(2, 4, 1, dtype=torch.float64), atol=1e-8,
              what="A^T (b - Pb) (the residual must be orthogonal to the column space)")


@LAB.check(points=2, grades="SVD")
def eckart_young(ctx: CheckContext):
    """Rank-k truncation: its error equals the norm of the discarded singular values (Frobenius, spectral)."""
    A = ctx.randn(3, 10, 7)
    k = ctx.randint(1, 6)
    Ak = ctx.call("low_rank_approx", A, k)
    ctx.expect(int(torch.linalg.matrix_rank(Ak).max()) <= k, f"low_rank_approx(A, {k}) has rank above {k}")
    S = torch.linalg.svdvals(A)
    ctx.close(torch.linalg.matrix_norm(A - Ak), S[:, k:].pow(2).sum(-1).sqrt(), atol=1e-8,
              what=f"||A - A_{k}||_F")
    ctx.close(torch.linalg.matrix_norm(A - Ak, ord=2), S[:, k], atol=1e-8, what=f"||A - A_{k}||_2")
    for norm, truth in (("fro", S[:, k:].pow(2).sum(-1).sqrt()), ("spectral", S[:, k])):
        ctx.close(ctx.call("discarded_norm", S, k, norm), truth, atol=1e-10, what=f"discarded_norm(S, {k}, {norm!r})")


@LAB.check(points=1, grades="tensor contractions")
def einsum_bilinear(ctx: CheckContext):
    """bilinear(x, W, y) equals x_b^T W y_b for every row b."""
    B, m, n = ctx.randint(1, 9), ctx.randint(1, 9), ctx.randint(1, 9)
    x, W, y = ctx.randn(B, m), ctx.randn(m, n), ctx.randn(B, n)
    ctx.close(ctx.call("bilinear", x, W, y), ((x @ W) * y).sum(-1), atol=1e-10, what="bilinear")


@LAB.check(points=2, grades="Q/K/V attention with torch.einsum")
def qkv_attention(ctx: CheckContext):
    """attention equals F.scaled_dot_product_attention within 1e-6 (float64), with and without a mask."""
    T, S, d = ctx.randint(2, 9), ctx.randint(2, 9), ctx.randint(2, 17)
    q, k, v = ctx.randn(2, 3, T, d), ctx.randn(2, 3, S, d), ctx.randn(2, 3, S, d + 1)
    ctx.close(ctx.call("attention", q, k, v), F.scaled_dot_product_attention(q, k, v), atol=1e-6,
              what="attention without mask")
    mask = torch.from_numpy(ctx.rng.random((2, 1, T, S)) < 0.6)
    mask[..., 0] = True  # every query keeps a key
    ctx.close(ctx.call("attention", q, k, v, mask), F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
              atol=1e-6, what="attention with a boolean mask")


@LAB.check(points=2, grades="Q/K/V attention with torch.einsum")
def multihead(ctx: CheckContext):
    """multihead_attention equals per-head F.scaled_dot_product_attention (causal mask) within 1e-6."""
    B, T, H = 2, ctx.randint(2, 9), ctx.choice([1, 2, 4])
    C = H * ctx.randint(2, 6)
    x, ws = ctx.randn(B, T, C), [ctx.randn(C, C) / math.sqrt(C) for _ in range(4)]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    q, k, v = ((x @ w.T).view(B, T, H, C // H).transpose(1, 2) for w in ws[:3])
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=causal).transpose(1, 2).reshape(B, T, C) @ ws[3].T
    ctx.close(ctx.call("multihead_attention", x, *ws, H, causal), want, atol=1e-6, what="multi-head attention")


# --- seeded bugs: each must fail at least one check ---------------------------------------------------
def svd_ascending(A, max_sweeps=60):
    U, S, Vh = linalg.batched_svd(A, max_sweeps)
    return U.flip(-1), S.flip(-1), Vh.flip(-2)


def svd_returns_v(A, max_sweeps=60):
    U, S, Vh = linalg.batched_svd(A, max_sweeps)
    return U, S, Vh.mT.contiguous() if Vh.shape[-1] == Vh.shape[-2] else Vh.mT[..., : Vh.shape[-2], :]


def svd_one_sweep(A, max_sweeps=60):
    return linalg.batched_svd(A, max_sweeps=1)


def projector_unnormalised(A):
    return A @ A.mT


def low_rank_off_by_one(A, k):
    return linalg.low_rank_approx(A, k + 1)


def attention_scaled_by_d(q, k, v, mask=None):
    return linalg.attention(q * math.sqrt(1 / q.shape[-1]), k, v, mask)


def attention_mask_ignored(q, k, v, mask=None):
    return linalg.attention(q, k, v)


LAB.bug("svd_ascending", batched_svd=svd_ascending)
LAB.bug("svd_returns_v", batched_svd=svd_returns_v)
LAB.bug("svd_one_sweep", batched_svd=svd_one_sweep)
LAB.bug("projector_unnormalised", projector=projector_unnormalised)
LAB.bug("low_rank_off_by_one", low_rank_approx=low_rank_off_by_one)
LAB.bug("attention_scaled_by_d", attention=attention_scaled_by_d, multihead_attention=linalg.multihead_attention)
LAB.bug("attention_mask_ignored", attention=attention_mask_ignored)


# --- deliverable ----------------------------------------------------------------------------------------
def _gray_images(n: int) -> torch.Tensor:
    """CIFAR-10 test images as grayscale 32x32 matrices (real data for Eckart-Young)."""
    from llmlab.data import cifar

    x, _ = cifar.load("test")
    pick = np.random.default_rng(0).permutation(len(x))[:n]  # rows are sorted by class
    return torch.from_numpy(x[pick].mean(-1) / 255.0).to(torch.float64)  # (n, 32, 32)


def run(profile: str, out: Path) -> tuple[dict, str]:
    big = profile == "full"
    gen = torch.Generator().manual_seed(0)
    shapes = [(64, 48), (48, 64), (64, 64), (128, 16)] if big else [(16, 12), (12, 16), (16, 16), (32, 4)]
    batch = 64 if big else 16
    rows, errors = [], []
    for m, n in shapes:
        for kind in ("gaussian", "rank-deficient", "ill-conditioned"):
            if kind == "gaussian":
                A = torch.randn(batch, m, n, generator=gen, dtype=torch.float64)
            elif kind == "rank-deficient":
                r = max(1, min(m, n) // 3)
                A = torch.randn(batch, m, r, generator=gen, dtype=torch.float64) @ torch.randn(
                    batch, r, n, generator=gen, dtype=torch.float64)
            else:
                k = min(m, n)
                Q1 = torch.linalg.qr(torch.randn(batch, m, k, generator=gen, dtype=torch.float64))[0]
                Q2 = torch.linalg.qr(torch.randn(batch, n, k, generator=gen, dtype=torch.float64))[0]
                A = Q1 @ torch.diag_embed(torch.logspace(0, -12, k, dtype=torch.float64).expand(batch, k)) @ Q2.mT
            t0 = time.perf_counter()
            U, S, Vh = linalg.batched_svd(A)
            ours = time.perf_counter() - t0
            t0 = time.perf_counter()
            torch.linalg.svd(A, full_matrices=False)
            lapack = time.perf_counter() - t0
            err = ((U @ torch.diag_embed(S) @ Vh - A).flatten(-2).norm(dim=-1) / A.flatten(-2).norm(dim=-1))
            errors.append(err)
            rows.append({"shape": f"{m}x{n}", "kind": kind, "batch": batch, "max_rel_error": float(err.max()),
                         "jacobi_s": round(ours, 4), "lapack_s": round(lapack, 4)})
    all_err = torch.cat(errors)
    with figure(out / "svd_reconstruction_error.png", "Per-matrix SVD reconstruction error (float64)") as ax:
        ax.hist(np.log10(all_err.clamp_min(1e-18).numpy()), bins=30)
        ax.axvline(math.log10(RECON_TOL), color="r", ls="--", label=f"limit {RECON_TOL:g}")
        ax.set_xlabel("log10 ||U S Vh - A||_F / ||A||_F")
        ax.set_ylabel("matrices")
        ax.legend()

    images = _gray_images(256 if big else 32)
    S = torch.linalg.svdvals(images)
    ks = list(range(0, 33, 2))
    fro = [float((torch.linalg.matrix_norm(images - linalg.low_rank_approx(images, k)) /
                  torch.linalg.matrix_norm(images)).mean()) for k in ks]
    predicted = [float((linalg.discarded_norm(S, k) / torch.linalg.matrix_norm(images)).mean()) for k in ks]
    with figure(out / "eckart_young_cifar.png", "Eckart-Young on CIFAR-10 images (grayscale 32x32)", ncols=2) as ax:
        ax[0].semilogy(S.mean(0).numpy())
        ax[0].set_xlabel("index i")
        ax[0].set_ylabel("mean singular value")
        ax[1].plot(ks, fro, "o", label="measured ||A - A_k||_F / ||A||_F")
        ax[1].plot(ks, predicted, "-", label="sqrt(sum of discarded S^2) / ||A||_F")
        ax[1].set_xlabel("rank k")
        ax[1].legend()
    gap = max(abs(a - b) for a, b in zip(fro, predicted, strict=True))

    q = torch.randn(4, 8, 64, 32, generator=gen, dtype=torch.float64)
    att_err = float((linalg.attention(q, q, q) - F.scaled_dot_product_attention(q, q, q)).abs().max())
    metrics = {"svd": rows, "svd_max_rel_error": float(all_err.max()), "matrices": int(all_err.numel()),
               "svd_rel_error_per_matrix": [float(e) for e in all_err],
               "eckart_young_max_gap": gap, "attention_max_abs_error_vs_sdpa": att_err}
    table = "\n".join(f"| {r['shape']} | {r['kind']} | {r['max_rel_error']:.2e} | {r['jacobi_s']:.3f} | "
                      f"{r['lapack_s']:.3f} |" for r in rows)
    report = f"""
Batched one-sided Jacobi SVD over {metrics['matrices']} float64 matrices: worst relative reconstruction error
{metrics['svd_max_rel_error']:.2e} (limit {RECON_TOL:g}).

| shape | kind | max rel. error | Jacobi (s) | LAPACK (s) |
|---|---|---|---|---|
{table}

Eckart-Young on real CIFAR-10 images: measured rank-k error and the discarded-singular-value norm agree to
{gap:.1e} (mean relative error over images). einsum attention vs `scaled_dot_product_attention`: {att_err:.1e}.

![svd](svd_reconstruction_error.png)
![eckart-young](eckart_young_cifar.png)
"""
    return metrics, report
