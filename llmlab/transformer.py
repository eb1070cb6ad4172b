"""A decoder-only transformer from its parts (lab m09), and the training loop pieces around it.

Every component is a plain function over tensors (weights passed in, PyTorch's (d_out, d_in) layout), so
each is tested on its own; :class:`TransformerLM` wires them into a pre-norm decoder LM. With RMSNorm,
SwiGLU, rotary positions and no biases the model is Llama-shaped: :mod:`llmlab.hf` exports it as a Hugging
Face ``LlamaForCausalLM`` folder whose logits equal llmlab's.

Rotary embeddings use the half-split convention of Hugging Face's Llama (rotate the pairs (i, i + d/2)).

Attention is written out from arithmetic (``attn_implementation="eager"``, the lab's reference) or, by default
when training and serving a model, runs PyTorch's fused ``scaled_dot_product_attention`` kernel (``"sdpa"``,
Hugging Face's name for the same choice): the same function to float precision (tests/test_text.py),
without the (B, H, T, T) score tensors that eager attention and its backward materialize.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from llmlab.attention import scaled_dot_product_attention, stable_softmax
from llmlab.distributed.checkpointing import checkpoint_segment

POSITIONS = ("rope", "learned", "sinusoidal", "alibi")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")


# --- components --------------------------------------------------------------------------------------
def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x (..., d_in) @ weight.T with weight (d_out, d_in), plus bias."""
    y = x @ weight.T
    return y + bias if bias is not None else y


def embedding(ids: Tensor, weight: Tensor) -> Tensor:
    """Rows of weight (vocab, d) for integer ids of any shape."""
    return weight[ids]


def rmsnorm(x: Tensor, weight: Tensor, eps: float = 1e-5) -> Tensor:
    """x / sqrt(mean(x^2) + eps) * weight over the last dim (Zhang & Sennrich 2019), computed in float32
    at least, as Llama does."""
    dtype = x.dtype
    x32 = x.to(torch.promote_types(dtype, torch.float32))
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(dtype) * weight


def layernorm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """(x - mean) / sqrt(var + eps) * weight + bias over the last dim (biased variance, as nn.LayerNorm)."""
    mu = x.mean(-1, keepdim=True)
    var = (x - mu).pow(2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * weight + bias


def silu(x: Tensor) -> Tensor:
    """x * sigmoid(x)."""
    return x * torch.sigmoid(x)


def swiglu(x: Tensor, w1: Tensor, w2: Tensor, w3: Tensor) -> Tensor:
    """The SwiGLU feed-forward w2(silu(w1 x) * w3 x) (Shazeer 2020); w1, w3 (d_ff, d), w2 (d, d_ff)."""
    return linear(silu(linear(x, w1)) * linear(x, w3), w2)


def softmax(x: Tensor, dim: int = -1) -> Tensor:
    """Numerically stable softmax (subtracts the max)."""
    return stable_softmax(x, dim)


def rope_angles(positions: Tensor, head_dim: int, theta: float = 10000.0) -> tuple[Tensor, Tensor]:
    """cos and sin (T, head_dim) of the rotation angles position * theta^(-2i/d), halves repeated."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64, device=positions.device) / head_dim)
    angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def rope(x: Tensor, positions: Tensor, theta: float = 10000.0) -> Tensor:
    """Rotary position embedding of x (..., T, head_dim) at integer ``positions`` (T,): rotates each pair
    (x_i, x_{i+d/2}) by position * theta^(-2i/d). Relative: <rope(q, m), rope(k, n)> depends on m - n only."""
    cos, sin = rope_angles(positions, x.shape[-1], theta)
    return apply_rope(x, cos.to(x.dtype), sin.to(x.dtype))


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """The rotation itself, given cos and sin of the angles (broadcastable to x): pairs (i, i + d/2)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def sinusoidal_positions(T: int, d: int) -> Tensor:
    """The fixed sinusoidal encodings of Vaswani et al. (T, d): sin on even channels, cos on odd ones."""
    pos = torch.arange(T, dtype=torch.float64)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, d, 2, dtype=torch.float64) / d)
    pe = torch.zeros(T, d, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: d // 2])
    return pe


def alibi_slopes(n_heads: int) -> Tensor:
    """ALiBi head slopes 2^(-8h/H), h = 1..H (Press et al. 2022; for H a power of two)."""
    return torch.tensor([2 ** (-8 * (h + 1) / n_heads) for h in range(n_heads)], dtype=torch.float64)


def multihead_self_attention(x: Tensor, wq: Tensor, wk: Tensor, wv: Tensor, wo: Tensor, n_heads: int,
                             positions: Tensor | None = None, theta: float | None = 10000.0,
                             mask: Tensor | None = None, bias: Tensor | None = None, fused: bool = False) -> Tensor:
    """Causal multi-head self-attention of x (B, T, d): heads split the projections' channels; with
    ``positions`` (T,) and ``theta``, RoPE rotates q and k. ``mask`` (T, T) bool narrows the causal mask;
    ``bias`` (H, T, T) is added to the scores (ALiBi). ``fused``: plain causal attention (no mask, no bias)
    runs torch's fused kernel instead of the arithmetic below."""
    B, T, d = x.shape
    hd = d // n_heads
    split = lambda t: t.reshape(B, T, n_heads, hd).transpose(1, 2)  # (B, H, T, hd)
    q, k, v = split(linear(x, wq)), split(linear(x, wk)), split(linear(x, wv))
    if positions is not None and theta is not None:
        q, k = rope(q, positions, theta), rope(k, positions, theta)
    if fused and mask is None and bias is None:
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return linear(y.transpose(1, 2).reshape(B, T, d), wo)
    causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
    allowed = causal if mask is None else causal & mask
    if bias is None:
        y = scaled_dot_product_attention(q, k, v, mask=allowed)
    else:
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(hd) + bias.to(q.dtype)
        y = softmax(scores.masked_fill(~allowed, float("-inf"))) @ v
    return linear(y.transpose(1, 2).reshape(B, T, d), wo)


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean -log softmax(logits)[target] over all positions, via logsumexp (stable for huge logits)."""
    logits = logits.reshape(-1, logits.shape[-1])
    targets = targets.reshape(-1)
    m = logits.max(-1, keepdim=True).values
    lse = m.squeeze(-1) + torch.log(torch.exp(logits - m).sum(-1))
    return (lse - logits.gather(-1, targets[:, None]).squeeze(-1)).mean()


@torch.no_grad()
def clip_grad_norm(parameters, max_norm: float, eps: float = 1e-6) -> float:
    """Scale all gradients together so that their global L2 norm is at most max_norm; returns the norm
    before clipping (as torch.nn.utils.clip_grad_norm_)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    total = math.sqrt(sum(float(g.pow(2).sum()) for g in grads))
    if total > max_norm:
        for g in grads:
            g.mul_(max_norm / (total + eps))
    return total


def cosine_lr(step: int, max_lr: float, min_lr: float, warmup: int, total: int) -> float:
    """Linear warm-up from 0 to max_lr over ``warmup`` steps, then cosine decay to min_lr at ``total``,
    and min_lr after."""
    if step < warmup:
        return max_lr * step / warmup
    if step >= total:
        return min_lr
    progress = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def get_batch(tokens: np.ndarray, batch_size: int, context: int, device: str = "cpu",
              generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Random windows: inputs (B, context) and next-token targets, from a 1-D token array."""
    starts = torch.randint(0, len(tokens) - context, (batch_size,), generator=generator).numpy()
    idx = starts[:, None] + np.arange(context + 1)[None, :]
    window = torch.from_numpy(np.asarray(tokens)[idx].astype(np.int64))
    return window[:, :-1].to(device), window[:, 1:].to(device)


def save_checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer, iteration: int, path) -> None:
    """Model, optimizer state and iteration in one file (written atomically)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "iteration": iteration,
                "config": asdict(model.config) if hasattr(model, "config") else None}, tmp)
    tmp.replace(path)


def load_checkpoint(path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Restore model (and optimizer) state; returns the iteration saved."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    return int(state["iteration"])


def transformer_block(x: Tensor, w: dict[str, Tensor], n_heads: int, positions: Tensor | None = None,
                      theta: float | None = 10000.0, eps: float = 1e-5, bias: Tensor | None = None,
                      fused: bool = False) -> Tensor:
    """A pre-norm (RMSNorm) decoder block: h = x + attn(rmsnorm(x)); out = h + swiglu(rmsnorm(h)).
    ``w`` holds attn_norm, wq, wk, wv, wo, ffn_norm, w1, w2, w3 (Llama's decoder layer, same math)."""
    h = x + multihead_self_attention(rmsnorm(x, w["attn_norm"], eps), w["wq"], w["wk"], w["wv"], w["wo"], n_heads,
                                     positions, theta, bias=bias, fused=fused)
    return h + swiglu(rmsnorm(h, w["ffn_norm"], eps), w["w1"], w["w2"], w["w3"])


# --- the model -----------------------------------------------------------------------------------------
@dataclass
class TransformerConfig:
    vocab_size: int
    context: int = 128
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int | None = None  # default: SwiGLU's 8/3 d rounded up to a multiple of 32
    positions: str = "rope"
    rope_theta: float = 10000.0
    norm: str = "rmsnorm"
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    attn_implementation: str = "sdpa"  # or "eager": attention from arithmetic (see the module's docstring)

    def __post_init__(self):
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}")
        if self.norm not in ("rmsnorm", "layernorm"):
            raise ValueError("norm must be 'rmsnorm' or 'layernorm'")
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}")
        if self.d_model % self.n_heads:
            raise ValueError("d_model must be divisible by n_heads")
        if self.d_ff is None:
            self.d_ff = 32 * math.ceil(8 * self.d_model / 3 / 32)

    @property
    def llama_shaped(self) -> bool:
        return self.positions == "rope" and self.norm == "rmsnorm"


class Norm(nn.Module):
    def __init__(self, d: int, kind: str, eps: float):
        super().__init__()
        self.kind, self.eps = kind, eps
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d)) if kind == "layernorm" else None

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "rmsnorm":
            return rmsnorm(x, self.weight, self.eps)
        return layernorm(x, self.weight, self.bias, self.eps)


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + swiglu(norm(x))."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        d, f = cfg.d_model, cfg.d_ff
        self.cfg = cfg
        self.attn_norm, self.ffn_norm = Norm(d, cfg.norm, cfg.norm_eps), Norm(d, cfg.norm, cfg.norm_eps)
        self.wq, self.wk, self.wv, self.wo = (nn.Parameter(torch.empty(d, d)) for _ in range(4))
        self.w1, self.w3 = nn.Parameter(torch.empty(f, d)), nn.Parameter(torch.empty(f, d))
        self.w2 = nn.Parameter(torch.empty(d, f))

    def forward(self, x: Tensor, positions: Tensor, bias: Tensor | None = None) -> Tensor:
        theta = self.cfg.rope_theta if self.cfg.positions == "rope" else None
        fused = self.cfg.attn_implementation == "sdpa"
        if self.cfg.norm == "rmsnorm":
            w = {"attn_norm": self.attn_norm.weight, "ffn_norm": self.ffn_norm.weight, "wq": self.wq, "wk": self.wk,
                 "wv": self.wv, "wo": self.wo, "w1": self.w1, "w2": self.w2, "w3": self.w3}
            return transformer_block(x, w, self.cfg.n_heads, positions, theta, self.cfg.norm_eps, bias, fused)
        x = x + multihead_self_attention(self.attn_norm(x), self.wq, self.wk, self.wv, self.wo, self.cfg.n_heads,
                                         positions, theta, bias=bias, fused=fused)
        return x + self.mlp(self.ffn_norm(x))

    def mlp(self, x: Tensor) -> Tensor:
        return swiglu(x, self.w1, self.w2, self.w3)


class TransformerLM(nn.Module):
    """Token embedding -> positions (rope | learned | sinusoidal | alibi) -> pre-norm blocks -> final norm
    -> linear head. ``forward(ids (B, T), positions=None)`` returns logits (B, T, vocab)."""

    def __init__(self, cfg: TransformerConfig, seed: int | None = None):
        super().__init__()
        self.config = cfg
        self.embed = nn.Parameter(torch.empty(cfg.vocab_size, cfg.d_model))
        self.pos_embed = nn.Parameter(torch.empty(cfg.context, cfg.d_model)) if cfg.positions == "learned" else None
        if cfg.positions == "sinusoidal":
            self.register_buffer("sinusoid", sinusoidal_positions(cfg.context, cfg.d_model).float(), persistent=False)
        self.blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.final_norm = Norm(cfg.d_model, cfg.norm, cfg.norm_eps)
        self.head = None if cfg.tie_embeddings else nn.Parameter(torch.empty(cfg.vocab_size, cfg.d_model))
        self.activation_checkpointing = False  # recompute each block in backward (lab m12)
        self.reset_parameters(seed)

    def reset_parameters(self, seed: int | None = None) -> None:
        """Normal(0, 0.02) weights; residual output projections scaled by 1/sqrt(2 n_layers) (GPT-2)."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        with torch.no_grad():
            for name, p in self.named_parameters():
                if p.dim() < 2:
                    continue
                std = 0.02 / math.sqrt(2 * self.config.n_layers) if name.endswith(("wo", "w2")) else 0.02
                p.copy_(torch.randn(p.shape, generator=gen) * std)

    def forward(self, ids: Tensor, positions: Tensor | None = None, return_residuals: bool = False,
                logits_at: slice | None = None):
        """Logits (B, T, vocab); with ``logits_at`` only those positions' (sampling needs the last one,
        ``slice(-1, None)``; RLHF the ones that predict the reply): the vocabulary's head is most of a small
        model's arithmetic."""
        residuals = self.trunk(ids, positions)
        x = residuals[-1] if logits_at is None else residuals[-1][:, logits_at]
        logits = linear(self.final_norm(x), self.embed if self.head is None else self.head)
        return (logits, residuals) if return_residuals else logits

    def trunk(self, ids: Tensor, positions: Tensor | None = None) -> list[Tensor]:
        """The residual stream (B, T, d_model) after the embedding and after each block, without the head: what
        a model that reads the hidden states (a reward model, a probe) needs."""
        B, T = ids.shape
        if T > self.config.context and self.config.positions in ("learned", "sinusoidal"):
            raise ValueError(f"sequence of {T} tokens is longer than the context ({self.config.context})")
        positions = torch.arange(T, device=ids.device) if positions is None else positions
        x = embedding(ids, self.embed)
        if self.pos_embed is not None:
            x = x + self.pos_embed[positions]
        elif self.config.positions == "sinusoidal":
            x = x + self.sinusoid[positions].to(x.dtype)
        bias = None
        if self.config.positions == "alibi":
            rel = (positions[None, :] - positions[:, None]).to(torch.float64)  # j - i (<= 0 where causal)
            bias = alibi_slopes(self.config.n_heads)[:, None, None] * rel[None]
        residuals = [x]
        for block in self.blocks:
            if self.activation_checkpointing and x.requires_grad:
                x = checkpoint_segment(block, x, positions, bias)
            else:
                x = block(x, positions, bias)
            residuals.append(x)
        return residuals

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def generate(self, ids: Tensor, max_new_tokens: int, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> Tensor:
        """Sample continuations of ids (B, T) (no KV cache: this is the teaching model)."""
        for _ in range(max_new_tokens):
            logits = self(ids[:, -self.config.context:], logits_at=slice(-1, None))[:, -1] / max(temperature, 1e-6)
            nxt = torch.multinomial(torch.softmax(logits.float(), -1), 1, generator=generator)
            ids = torch.cat([ids, nxt], dim=1)
        return ids


# --- training --------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 32
    max_lr: float = 3e-3
    min_lr: float = 3e-4
    warmup: int = 100
    weight_decay: float = 0.1
    clip: float = 1.0
    eval_every: int = 250
    eval_batches: int = 20
    seed: int = 0


@torch.no_grad()
def evaluate(model: TransformerLM, tokens: np.ndarray, batches: int, batch_size: int, seed: int = 1234) -> float:
    """Mean cross-entropy (nats/token) on ``batches`` random windows (the same windows for a given seed)."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    losses = [float(cross_entropy(model(x), y)) for x, y in
              (get_batch(tokens, batch_size, model.config.context, generator=gen) for _ in range(batches))]
    model.train()
    return sum(losses) / len(losses)


def train(model: TransformerLM, train_tokens: np.ndarray, val_tokens: np.ndarray, cfg: TrainConfig,
          on_step=None, desc: str = "training", time_limit_s: float | None = None) -> dict:
    """AdamW (llmlab.optim) with warm-up + cosine schedule, global-norm clipping, periodic evaluation.
    ``on_step(step, model)`` runs after each backward pass, before the update (for gradient statistics).
    Returns the history: steps, train and validation losses, learning rates, seconds."""
    import time

    from tqdm import tqdm

    from llmlab.optim import AdamW

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                lr=cfg.max_lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(cfg.seed)
    hist = {"step": [], "train_loss": [], "eval_step": [], "val_loss": [], "lr": [], "seconds": 0.0}
    t0 = time.perf_counter()
    bar = tqdm(range(cfg.steps + 1), desc=desc, mininterval=2, leave=False)
    for step in bar:
        if step % cfg.eval_every == 0 or step == cfg.steps:
            hist["eval_step"].append(step)
            hist["val_loss"].append(evaluate(model, val_tokens, cfg.eval_batches, cfg.batch_size))
            bar.set_postfix(val=f"{hist['val_loss'][-1]:.3f}")
        if step == cfg.steps or (time_limit_s and time.perf_counter() - t0 > time_limit_s):
            break
        lr = cosine_lr(step, cfg.max_lr, cfg.min_lr, cfg.warmup, cfg.steps)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = get_batch(train_tokens, cfg.batch_size, model.config.context, generator=gen)
        loss = cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if on_step is not None:
            on_step(step, model)
        clip_grad_norm(model.parameters(), cfg.clip)
        opt.step()
        hist["step"].append(step)
        hist["train_loss"].append(loss.item())
        hist["lr"].append(lr)
    hist["seconds"] = time.perf_counter() - t0
    hist["optimizer"] = opt
    return hist


@torch.no_grad()
def attention_maps(model: TransformerLM, ids: torch.Tensor, heads: int = 4) -> dict[str, np.ndarray]:
    """Softmax attention of every head (first sequence), recomputed from the model's weights."""
    cfg = model.config
    T = ids.shape[1]
    pos = torch.arange(T)
    x = embedding(ids, model.embed)
    maps = {}
    hd = cfg.d_model // cfg.n_heads
    split = lambda t: t.reshape(1, T, cfg.n_heads, hd).transpose(1, 2)
    for li, block in enumerate(model.blocks):
        h = block.attn_norm(x)
        q, k = split(linear(h, block.wq)), split(linear(h, block.wk))
        if cfg.positions == "rope":
            q, k = rope(q, pos, cfg.rope_theta), rope(k, pos, cfg.rope_theta)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
        w = torch.softmax(scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf")), -1)
        for hi in range(min(cfg.n_heads, heads)):
            maps[f"L{li} H{hi}"] = w[0, hi].numpy()
        x = block(x, pos)
    return maps
