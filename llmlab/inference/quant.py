"""Weight quantization for llmlab's decoder (lab m18): INT8 absmax, LLM.int8()'s mixed decomposition, and
GPTQ written from the paper (Frantar et al. 2023, Algorithm 1), against round-to-nearest (RTN) on the same
grid.

GPTQ quantizes a layer's weight W (d_out, d_in) one input column at a time, in blocks, and after each
column moves the rounding error onto the columns not yet quantized, weighted by the inverse Hessian of the
layer's reconstruction loss ||W X - W_q X||^2 (H = 2 X X^T from calibration inputs X), so that later
columns compensate. Damping (a fraction of the mean diagonal) keeps H invertible.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from llmlab import transformer as T

LINEARS = ("wq", "wk", "wv", "wo", "w1", "w3", "w2")


# --- INT8 ------------------------------------------------------------------------------------------------
def int8_absmax_quantize(W: Tensor) -> tuple[Tensor, Tensor]:
    """Per-output-channel (row) absmax INT8: q = round(W / s), s = max|W_row| / 127. Returns (q int8, s)."""
    scale = W.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127.0
    return torch.round(W / scale).clamp(-127, 127).to(torch.int8), scale.squeeze(1)


def int8_dequantize(q: Tensor, scale: Tensor) -> Tensor:
    return q.to(scale.dtype) * scale[:, None]


def llm_int8_matmul(x: Tensor, W: Tensor, threshold: float = 6.0) -> Tensor:
    """LLM.int8() (Dettmers et al. 2022): x @ W.T with the input feature dimensions that hold an outlier
    (|x| > threshold anywhere) multiplied in full precision, and the rest in INT8 with vector-wise scales
    (x per row, W per output channel), the integer products summed exactly (in float64: exact below 2^53, and
    matrix products of int64 do not exist on CUDA)."""
    x2 = x.reshape(-1, x.shape[-1])
    outliers = (x2.abs() > threshold).any(dim=0)
    regular = ~outliers
    out = x2[:, outliers] @ W[:, outliers].T if outliers.any() else 0.0
    if regular.any():
        xr, Wr = x2[:, regular], W[:, regular]
        sx = xr.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127.0
        qx = torch.round(xr / sx).clamp(-127, 127)
        qw, sw = int8_absmax_quantize(Wr)
        acc = (qx.to(torch.float64) @ qw.to(torch.float64).T).to(x.dtype)  # exact integer sums
        out = out + acc * sx * sw[None, :]
    return out.reshape(*x.shape[:-1], W.shape[0])


# --- a min-max grid and round-to-nearest --------------------------------------------------------------------
def grid_params(W: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """Asymmetric per-row grid for the columns of W: (scale, zero) with q in [0, 2^bits - 1]."""
    maxq = 2**bits - 1
    lo, hi = W.amin(dim=1).clamp(max=0), W.amax(dim=1).clamp(min=0)
    scale = ((hi - lo) / maxq).clamp(min=1e-12)
    zero = torch.round(-lo / scale)
    return scale, zero


def quantize_on_grid(w: Tensor, scale: Tensor, zero: Tensor, bits: int) -> Tensor:
    """Integer codes of a column (or block) w on the grid."""
    return torch.clamp(torch.round(w / scale) + zero, 0, 2**bits - 1)


def dequantize_codes(q: Tensor, scale: Tensor, zero: Tensor) -> Tensor:
    return scale * (q - zero)


def rtn_quantize(W: Tensor, bits: int, group_size: int | None = None) -> Tensor:
    """Round-to-nearest on the same per-group grid GPTQ uses; returns the dequantized weight."""
    return rtn_codes(W, bits, group_size).dequantize()


# --- GPTQ ------------------------------------------------------------------------------------------------
@dataclass
class GPTQResult:
    codes: Tensor  # (d_out, d_in) integer codes (uint8 storage)
    scales: Tensor  # (d_out, n_groups)
    zeros: Tensor  # (d_out, n_groups)
    bits: int
    group_size: int

    def dequantize(self) -> Tensor:
        g = self.group_size
        idx = torch.arange(self.codes.shape[1], device=self.codes.device) // g
        return self.scales[:, idx] * (self.codes.to(self.scales.dtype) - self.zeros[:, idx])


def hessian(X: Tensor) -> Tensor:
    """H = 2 X^T X / n for calibration inputs X (n, d_in): the Hessian of the mean squared layer error."""
    X = X.reshape(-1, X.shape[-1]).to(torch.float64)
    return 2.0 * X.T @ X / X.shape[0]


def gptq_quantize(W: Tensor, H: Tensor, bits: int = 4, group_size: int | None = 128, block_size: int = 128,
                  damp: float = 0.01) -> GPTQResult:
    """GPTQ of W (d_out, d_in) with Hessian H (d_in, d_in): columns in order, errors propagated through the
    upper Cholesky factor of H^-1, within a block at once and beyond it lazily (per block of ``block_size``
    columns); one grid per ``group_size`` columns, computed from the weights as updated when the group
    starts."""
    W = W.to(torch.float64).clone()
    H = H.to(torch.float64).clone()
    d_out, d_in = W.shape
    g = group_size or d_in
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H += damp * torch.mean(torch.diag(H)) * torch.eye(d_in, dtype=H.dtype, device=H.device)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    codes = torch.zeros(d_out, d_in, dtype=torch.float64, device=W.device)
    n_groups = math.ceil(d_in / g)
    scales = torch.zeros(d_out, n_groups, dtype=torch.float64, device=W.device)
    zeros = torch.zeros(d_out, n_groups, dtype=torch.float64, device=W.device)
    block = min(block_size, g)
    if g % block:
        raise ValueError("group_size must be a multiple of block_size (or smaller than it)")
    for i1 in range(0, d_in, block):
        i2 = min(i1 + block, d_in)
        if i1 % g == 0:  # a new group: its grid from the current (error-updated) weights
            scale, zero = grid_params(W[:, i1: i1 + g], bits)
            scales[:, i1 // g], zeros[:, i1 // g] = scale, zero
        q, err = gptq_block_update(W[:, i1:i2], Hinv[i1:i2, i1:i2], scale, zero, bits)
        codes[:, i1:i2] = q
        W[:, i2:] -= err @ Hinv[i1:i2, i2:]  # the block's errors, lazily, onto every later column
    return GPTQResult(codes.to(torch.uint8), scales.float(), zeros.float(), bits, g)


def gptq_block_update(W: Tensor, Hinv: Tensor, scale: Tensor, zero: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """One GPTQ column block: quantize the columns of W (d_out, b) in order on the grid (scale, zero per
    row); after each column, spread its scaled error err = (w - deq(q)) / Hinv[i, i] over the block's later
    columns as W[:, j] -= err * Hinv[i, j]. ``Hinv`` is the block's part of the upper Cholesky factor of
    H^-1. Returns (integer codes (d_out, b), errors (d_out, b)) for propagation beyond the block."""
    W = W.clone()
    codes, errors = torch.zeros_like(W), torch.zeros_like(W)
    for i in range(W.shape[1]):
        q = quantize_on_grid(W[:, i], scale, zero, bits)
        err = (W[:, i] - dequantize_codes(q, scale, zero)) / Hinv[i, i]
        W[:, i:] -= err[:, None] * Hinv[i, i:][None, :]
        codes[:, i], errors[:, i] = q, err
    return codes, errors


def rtn_codes(W: Tensor, bits: int, group_size: int | None = None) -> GPTQResult:
    """Round-to-nearest codes on one min-max grid per ``group_size`` columns."""
    g = group_size or W.shape[1]
    grids = [grid_params(W[:, start: start + g], bits) for start in range(0, W.shape[1], g)]
    scales, zeros = torch.stack([s for s, _ in grids], 1), torch.stack([z for _, z in grids], 1)
    idx = torch.arange(W.shape[1], device=W.device) // g
    codes = quantize_on_grid(W, scales[:, idx], zeros[:, idx], bits)
    return GPTQResult(codes.to(torch.uint8), scales, zeros, bits, g)


def layer_error(W: Tensor, Wq: Tensor, X: Tensor) -> float:
    """||W X - W_q X||^2 summed over calibration inputs X (n, d_in)."""
    X = X.reshape(-1, X.shape[-1]).to(torch.float64)
    return float(((X @ (W.to(torch.float64) - Wq.to(torch.float64)).T) ** 2).sum())


# --- whole models ---------------------------------------------------------------------------------------
@dataclass
class QuantConfig:
    method: str  # "rtn", "gptq", "int8"
    bits: int = 4
    group_size: int | None = 128


def _block_inputs(block, x: Tensor, cfg) -> tuple[dict[str, Tensor], Tensor]:
    """The inputs each linear of ``block`` sees for hidden states x (B, T, d), and the block's output."""
    B, L, d = x.shape
    hd = d // cfg.n_heads
    positions = torch.arange(L, device=x.device)
    h = T.rmsnorm(x, block.attn_norm.weight, cfg.norm_eps)
    split = lambda t: t.reshape(B, L, cfg.n_heads, hd).transpose(1, 2)  # noqa: E731
    q, k, v = split(T.linear(h, block.wq)), split(T.linear(h, block.wk)), split(T.linear(h, block.wv))
    q, k = T.rope(q, positions, cfg.rope_theta), T.rope(k, positions, cfg.rope_theta)
    y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, L, d)
    x2 = x + T.linear(y, block.wo)
    h2 = T.rmsnorm(x2, block.ffn_norm.weight, cfg.norm_eps)
    mid = T.silu(T.linear(h2, block.w1)) * T.linear(h2, block.w3)
    out = x2 + T.linear(mid, block.w2)
    return {"wq": h, "wk": h, "wv": h, "wo": y, "w1": h2, "w3": h2, "w2": mid}, out


@torch.no_grad()
def quantize_model(model: T.TransformerLM, qc: QuantConfig, calibration: Tensor | None = None) -> dict:
    """Quantize every linear weight of the blocks in place (their dequantized values replace them), block by
    block, GPTQ's calibration inputs flowing through the blocks already quantized. Returns the stored form
    (codes, scales, zeros per weight) and each layer's reconstruction error for GPTQ and RTN."""
    cfg = model.config
    stored, errors = {}, {}
    x = T.embedding(calibration, model.embed).float() if calibration is not None else None
    if qc.method == "gptq" and x is None:
        raise ValueError("GPTQ needs calibration token ids")
    for bi, block in enumerate(model.blocks):
        inputs = _block_inputs(block, x, cfg)[0] if x is not None else {}
        for name in LINEARS:
            W = getattr(block, name).data
            key = f"blocks.{bi}.{name}"
            if qc.method == "int8":
                q, s = int8_absmax_quantize(W)
                stored[key] = {"codes": q, "scales": s}
                Wq = int8_dequantize(q, s)
            elif qc.method in ("rtn", "gptq"):
                res = rtn_codes(W, qc.bits, qc.group_size) if qc.method == "rtn" else \
                    gptq_quantize(W, hessian(inputs[name]), qc.bits, qc.group_size)
                stored[key] = {"codes": res.codes, "scales": res.scales, "zeros": res.zeros}
                Wq = res.dequantize()
                if qc.method == "gptq":
                    errors[key] = {"gptq": layer_error(W, Wq, inputs[name]),
                                   "rtn": layer_error(W, rtn_quantize(W, qc.bits, qc.group_size), inputs[name])}
            else:
                raise ValueError("method must be rtn, gptq or int8")
            getattr(block, name).data.copy_(Wq.to(W.dtype))
        if x is not None:  # the next block sees this block's quantized output
            x = _block_inputs(block, x, cfg)[1]
    return {"config": asdict(qc), "weights": stored, "errors": errors}


def save_quantized(model: T.TransformerLM, quantized: dict, out_dir, tokenizer=None) -> Path:
    """The model folder (hf.export of the dequantized weights, loadable anywhere) plus quantized.safetensors
    holding the integer codes and grids, and quantization.json."""
    from safetensors.torch import save_file

    from llmlab import hf

    out = hf.export(model, out_dir, tokenizer)
    flat = {f"{k}.{part}": v.contiguous() for k, parts in quantized["weights"].items() for part, v in parts.items()}
    save_file(flat, str(out / "quantized.safetensors"))
    (out / "quantization.json").write_text(json.dumps(quantized["config"], indent=2))
    return out


def load_quantized(path) -> T.TransformerLM:
    """Load a folder written by :func:`save_quantized`, rebuilding the weights from the integer codes."""
    from safetensors.torch import load_file

    from llmlab import hf

    path = Path(path)
    model = hf.load(path)
    qc = QuantConfig(**json.loads((path / "quantization.json").read_text()))
    flat = load_file(str(path / "quantized.safetensors"))
    with torch.no_grad():
        for bi, block in enumerate(model.blocks):
            for name in LINEARS:
                key = f"blocks.{bi}.{name}"
                if qc.method == "int8":
                    W = int8_dequantize(flat[f"{key}.codes"], flat[f"{key}.scales"])
                else:
                    W = GPTQResult(flat[f"{key}.codes"], flat[f"{key}.scales"], flat[f"{key}.zeros"], qc.bits,
                                   qc.group_size or flat[f"{key}.codes"].shape[1]).dequantize()
                getattr(block, name).data.copy_(W)
    return model
