"""The empirical neural tangent kernel (Jacot et al. 2018): Θ(x, x') = J(x) J(x')ᵀ, J the Jacobian of the
network's outputs with respect to all its parameters, computed with torch.func two ways, as PyTorch's NTK
tutorial does: contracting per-example Jacobians, and NTK-vector products (a vjp, then a jvp, per output
direction) that never hold a Jacobian. The network is a one-layer transformer with a scalar read-out."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from llmlab.transformer import Norm, TransformerBlock, TransformerConfig


class OneLayerTransformer(nn.Module):
    """Token embedding, one pre-norm transformer block (RoPE attention and a SwiGLU MLP), a final RMSNorm, the
    mean over positions and a linear read-out to one number per sequence. Weights are drawn with variance
    1/fan-in (embeddings with variance 1), so every width starts with outputs of the same scale: the standard
    parameterization in which the kernel's movement shrinks as the width grows, at a learning rate ∝ 1/width."""

    def __init__(self, vocab: int, d_model: int, n_heads: int = 2, context: int = 32, seed: int = 0):
        super().__init__()
        # eager attention: torch's fused kernel has no forward-mode derivative (the NTK-vector products' jvp)
        cfg = TransformerConfig(vocab, context=context, d_model=d_model, n_layers=1, n_heads=n_heads,
                                attn_implementation="eager")
        gen = torch.Generator().manual_seed(seed)
        self.embed = nn.Parameter(torch.randn(vocab, d_model, generator=gen))
        self.block = TransformerBlock(cfg)
        with torch.no_grad():
            for p in self.block.parameters():
                if p.dim() == 2:
                    p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))
        self.norm = Norm(d_model, "rmsnorm", 1e-5)
        self.head = nn.Parameter(torch.randn(d_model, generator=gen) / math.sqrt(d_model))

    def forward(self, ids: Tensor) -> Tensor:
        """ids (B, T) -> (B,)"""
        x = self.block(self.embed[ids], torch.arange(ids.shape[1]))
        return self.norm(x).mean(1) @ self.head


def functional(model: nn.Module):
    """(f, params): ``f(params, x)`` the model's outputs for one example ``x`` as a vector (O,), and its
    parameters detached (a dict name -> tensor), for torch.func."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def f(p: dict, x: Tensor) -> Tensor:
        return functional_call(model, p, (x.unsqueeze(0),)).reshape(-1)

    return f, params


def ntk_jacobian(f, params: dict, x1: Tensor, x2: Tensor, chunk: int | None = None) -> Tensor:
    """Θ (N1, N2, O, O) by Jacobian contraction: per-example Jacobians (vmap of jacrev), then
    Θ[i, j, a, b] = Σ_params ∂f_a(x1_i)/∂θ · ∂f_b(x2_j)/∂θ."""
    jac = vmap(jacrev(f), (None, 0), chunk_size=chunk)
    j1, j2 = jac(params, x1), jac(params, x2)
    return sum(torch.einsum("naf,mbf->nmab", j1[k].flatten(2), j2[k].flatten(2)) for k in params)


def ntk_vector_products(f, params: dict, x1: Tensor, x2: Tensor) -> Tensor:
    """Θ (N1, N2, O, O) without a Jacobian in memory: for each pair and each output direction e_a,
    J(x2) (J(x1)ᵀ e_a), a vjp through x1 then a jvp through x2."""

    def pair(a: Tensor, b: Tensor) -> Tensor:
        out, pullback = vjp(lambda p: f(p, a), params)

        def row(v: Tensor) -> Tensor:  # J(b) J(a)ᵀ v
            (tangent,) = pullback(v)
            return jvp(lambda p: f(p, b), (params,), (tangent,))[1]

        return vmap(row)(torch.eye(out.numel(), dtype=out.dtype))  # [a, b] = e_aᵀ J(a) J(b)ᵀ e_b

    return vmap(vmap(pair, (None, 0)), (0, None))(x1, x2)


def kernel(model: nn.Module, x: Tensor, chunk: int | None = 16) -> Tensor:
    """The (N, N) kernel of a model with one output per example (the trace over outputs otherwise)."""
    f, params = functional(model)
    return ntk_jacobian(f, params, x, x, chunk).diagonal(dim1=2, dim2=3).sum(-1)


def relative_change(k0: Tensor, k1: Tensor) -> float:
    """‖Θ₁ − Θ₀‖_F / ‖Θ₀‖_F: how far training moved the kernel."""
    return float(torch.linalg.norm(k1 - k0) / torch.linalg.norm(k0))


def spectrum(k: Tensor) -> Tensor:
    """The kernel's eigenvalues, largest first (it is symmetric positive semi-definite)."""
    return torch.linalg.eigvalsh((k + k.T) / 2).flip(0)
