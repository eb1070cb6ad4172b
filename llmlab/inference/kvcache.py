"""A slot-based KV cache for llmlab's decoder (Llama-shaped :class:`~llmlab.transformer.TransformerLM`).

The cache holds keys and values for ``slots`` sequences, each up to the model's context: tensors of shape
(layers, slots, heads, context, head_dim). A sequence owns a slot while it runs; ``lengths[slot]`` says how
many positions are filled. :func:`forward` runs new tokens of several slots at once (a prefill of many
tokens, or one decode token each), writes their keys and values at their positions and attends over each
slot's own prefix only, so sequences of different lengths share one batched step. Rolling a slot back
(speculative decoding's rejected tokens) is just lowering its length.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from llmlab import transformer as T


class KVCache:
    def __init__(self, model: T.TransformerLM, slots: int, device=None, dtype=None):
        cfg = model.config
        if not cfg.llama_shaped:
            raise ValueError("the KV-cache engine serves Llama-shaped models (RoPE + RMSNorm)")
        p = next(model.parameters())
        self.device, self.dtype = device or p.device, dtype or p.dtype
        hd = cfg.d_model // cfg.n_heads
        shape = (cfg.n_layers, slots, cfg.n_heads, cfg.context, hd)
        self.k = torch.zeros(shape, device=self.device, dtype=self.dtype)
        self.v = torch.zeros(shape, device=self.device, dtype=self.dtype)
        self.lengths = [0] * slots
        self.free = list(range(slots))[::-1]
        self.context = cfg.context

    @property
    def bytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2

    def allocate(self) -> int:
        if not self.free:
            raise RuntimeError("no free KV-cache slot")
        slot = self.free.pop()
        self.lengths[slot] = 0
        return slot

    def release(self, slot: int) -> None:
        self.lengths[slot] = 0
        self.free.append(slot)

    def usage(self) -> float:
        """Share of the cache's positions in use (vLLM's gpu_cache_usage_perc, for a dense cache)."""
        return sum(self.lengths) / (len(self.lengths) * self.context)


@torch.no_grad()
def forward(model: T.TransformerLM, cache: KVCache, slots: list[int], tokens: list[list[int]]) -> list[Tensor]:
    """Run each slot's new ``tokens`` (lists of equal or different lengths) after its cached prefix; returns
    each slot's logits (n_new, vocab) and advances the slots' lengths."""
    cfg = model.config
    dev = cache.device
    n_new = [len(t) for t in tokens]
    if any(cache.lengths[s] + n > cache.context for s, n in zip(slots, n_new, strict=True)):
        raise ValueError("sequence longer than the model's context")
    B, L = len(slots), max(n_new)
    ids = torch.zeros(B, L, dtype=torch.long, device=dev)
    for b, t in enumerate(tokens):
        ids[b, : len(t)] = torch.tensor(t, device=dev)
    starts = torch.tensor([cache.lengths[s] for s in slots], device=dev)
    positions = starts[:, None] + torch.arange(L, device=dev)[None, :]  # (B, L)
    valid_new = torch.arange(L, device=dev)[None, :] < torch.tensor(n_new, device=dev)[:, None]
    ends = starts + torch.tensor(n_new, device=dev)
    total = int(ends.max())
    # key j is visible to query (b, i) when j <= position(b, i) and j < end(b)
    key_pos = torch.arange(total, device=dev)
    allowed = (key_pos[None, None, :] <= positions[:, :, None]) & (key_pos[None, None, :] < ends[:, None, None])
    slot_idx = torch.tensor(slots, device=dev)
    hd = cfg.d_model // cfg.n_heads
    x = T.embedding(ids, model.embed).to(cache.dtype)
    cos, sin = T.rope_angles(positions.reshape(-1), hd, cfg.rope_theta)
    cos = cos.reshape(B, 1, L, hd).to(cache.dtype)
    sin = sin.reshape(B, 1, L, hd).to(cache.dtype)
    write_b, write_t = valid_new.nonzero(as_tuple=True)
    split = lambda t: t.reshape(B, L, cfg.n_heads, hd).transpose(1, 2)  # noqa: E731
    for li, block in enumerate(model.blocks):
        h = T.rmsnorm(x, block.attn_norm.weight, cfg.norm_eps)
        q, k, v = split(T.linear(h, block.wq)), split(T.linear(h, block.wk)), split(T.linear(h, block.wv))
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        # write the new keys/values into their slots at their positions
        cache.k[li, slot_idx[write_b], :, positions[write_b, write_t]] = k[write_b, :, write_t]
        cache.v[li, slot_idx[write_b], :, positions[write_b, write_t]] = v[write_b, :, write_t]
        keys, values = cache.k[li, slot_idx, :, :total], cache.v[li, slot_idx, :, :total]  # (B, H, total, hd)
        scores = (q @ keys.transpose(-2, -1)) / math.sqrt(hd)
        scores = scores.masked_fill(~allowed[:, None], float("-inf"))
        y = torch.softmax(scores.float(), -1).to(cache.dtype) @ values
        x = x + T.linear(y.transpose(1, 2).reshape(B, L, cfg.d_model), block.wo)
        x = x + T.swiglu(T.rmsnorm(x, block.ffn_norm.weight, cfg.norm_eps), block.w1, block.w2, block.w3)
    logits = T.linear(T.rmsnorm(x, model.final_norm.weight, cfg.norm_eps),
                      model.embed if model.head is None else model.head).float()
    for s, n in zip(slots, n_new, strict=True):
        cache.lengths[s] += n
    return [logits[b, :n] for b, n in enumerate(n_new)]


def _rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin
