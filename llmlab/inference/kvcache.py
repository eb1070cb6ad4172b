"""A slot-based KV cache for llmlab's decoders: Llama-shaped :class:`~llmlab.transformer.TransformerLM`
(and its learned / sinusoidal position variants) and GPT-2 (:class:`~llmlab.gpt2.GPT2LM`).

The cache holds keys and values for ``slots`` sequences, each up to the model's context: tensors of shape
(layers, slots, heads, context, head_dim). A sequence owns a slot while it runs; ``lengths[slot]`` says how
many positions are filled. :func:`forward` runs new tokens of several slots at once (a prefill of many
tokens, or one decode token each), writes their keys and values at their positions and attends over each
slot's own prefix only, so sequences of different lengths share one batched step. Rolling a slot back
(speculative decoding's rejected tokens) is just lowering its length.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from llmlab import transformer as T


class KVCache:
    def __init__(self, model: T.TransformerLM, slots: int, device=None, dtype=None):
        cfg = model.config
        if cfg.positions == "alibi":
            raise ValueError("the KV-cache engine serves rotary, learned or sinusoidal positions, not ALiBi")
        p = next(model.parameters())
        self.device, self.dtype = device or p.device, dtype or p.dtype
        hd = cfg.d_model // cfg.n_heads
        shape = (cfg.n_layers, slots, cfg.n_heads, cfg.context, hd)
        self.k = torch.zeros(shape, device=self.device, dtype=self.dtype)
        self.v = torch.zeros(shape, device=self.device, dtype=self.dtype)
        self.lengths = [0] * slots
        self.free = list(range(slots))[::-1]
        self.context = cfg.context
        if cfg.positions == "rope":  # the rotation of every position, computed once (in float64, then cast)
            cos, sin = T.rope_angles(torch.arange(cfg.context, device=self.device), hd, cfg.rope_theta)
            self.rope_cos, self.rope_sin = cos.to(self.dtype), sin.to(self.dtype)

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
def forward(model, cache: KVCache, slots: list[int], tokens: list[list[int]], logits: bool = True) -> list[Tensor]:
    """Run each slot's new ``tokens`` (lists of equal or different lengths) after its cached prefix and
    advance the slots' lengths. Returns each slot's logits (n_new, vocab), float32 on the CPU (one transfer
    per step; sampling runs there, so a seed draws the same tokens on any device), or nothing with
    ``logits=False`` (a prefill whose outputs are not needed skips the head)."""
    cfg = model.config
    dev = cache.device
    n_new = [len(t) for t in tokens]
    starts_list = [cache.lengths[s] for s in slots]
    if any(s + n > cache.context for s, n in zip(starts_list, n_new, strict=True)):
        raise ValueError("sequence longer than the model's context")
    B, L = len(slots), max(n_new)
    if L == 1:  # one new token per slot: no padding
        ids = torch.tensor(tokens, device=dev)
    else:
        ids = torch.zeros(B, L, dtype=torch.long, device=dev)
        for b, t in enumerate(tokens):
            ids[b, : len(t)] = torch.tensor(t, device=dev)
    starts = torch.tensor(starts_list, device=dev)
    positions = starts[:, None] + torch.arange(L, device=dev)[None, :]  # (B, L)
    lookup = positions.clamp(max=cache.context - 1)  # padding past a short slot's end may pass the context
    ends_list = [s + n for s, n in zip(starts_list, n_new, strict=True)]
    total = max(ends_list)
    mask = None  # one token per slot and slots of one length: every cached key is visible, no mask
    if L > 1 or min(ends_list) != total:  # key j is visible to query (b, i) when j <= position(b, i) < end(b)
        key_pos = torch.arange(total, device=dev)
        ends = torch.tensor(ends_list, device=dev)
        mask = ((key_pos[None, None, :] <= positions[:, :, None]) & (key_pos[None, None, :] < ends[:, None, None]))[
            :, None]
    contiguous = slots == list(range(slots[0], slots[0] + B))
    rows = slice(slots[0], slots[0] + B) if contiguous else torch.tensor(slots, device=dev)
    hd = cfg.d_model // cfg.n_heads
    x = T.embedding(ids, model.embed)
    if getattr(model, "pos_embed", None) is not None:
        x = x + model.pos_embed[lookup]
    elif cfg.positions == "sinusoidal":
        x = x + model.sinusoid[lookup].to(x.dtype)
    x = x.to(cache.dtype)
    rope = cfg.positions == "rope"
    if rope:
        cos, sin = cache.rope_cos[lookup][:, None], cache.rope_sin[lookup][:, None]  # (B, 1, L, hd)
    single = B == 1  # one slot (batch 1, a draft's proposals): its new keys go in as one slice
    if not single:
        if L == 1:
            write_b, write_t = torch.arange(B, device=dev), torch.zeros(B, dtype=torch.long, device=dev)
        else:
            n_new_t = torch.tensor(n_new, device=dev)
            write_b, write_t = (torch.arange(L, device=dev)[None, :] < n_new_t[:, None]).nonzero(as_tuple=True)
        write_slot, write_pos = torch.tensor(slots, device=dev)[write_b], positions[write_b, write_t]
    split = lambda t: t.reshape(B, L, cfg.n_heads, hd).transpose(1, 2)  # noqa: E731
    d = cfg.d_model
    for li, block in enumerate(model.blocks):
        wqkv, bqkv, w_up = packed(block)
        q, k, v = (split(t) for t in F.linear(_norm(x, block.attn_norm), wqkv, bqkv).split(d, dim=-1))
        if rope:
            q, k = T.apply_rope(q, cos, sin), T.apply_rope(k, cos, sin)
        # write the new keys/values into their slots at their positions
        if single:
            cache.k[li, slots[0], :, starts_list[0]: total] = k[0]
            cache.v[li, slots[0], :, starts_list[0]: total] = v[0]
        else:
            cache.k[li, write_slot, :, write_pos] = k[write_b, :, write_t]
            cache.v[li, write_slot, :, write_pos] = v[write_b, :, write_t]
        keys, values = cache.k[li, rows, :, :total], cache.v[li, rows, :, :total]  # (B, H, total, hd)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        x = x + F.linear(y.transpose(1, 2).reshape(B, L, d), block.wo, getattr(block, "bo", None))
        h = _norm(x, block.ffn_norm)
        if w_up is None:  # GPT-2
            x = x + block.mlp(h)
        else:  # SwiGLU with the gate and up projections in one matmul
            gate, up = F.linear(h, w_up).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, block.w2)
    for s, n in zip(slots, n_new, strict=True):
        cache.lengths[s] += n
    if not logits:
        return []
    out = F.linear(_norm(x, model.final_norm), model.embed if model.head is None else model.head).float().cpu()
    return [out[b, :n] for b, n in enumerate(n_new)]


def packed(block) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """The block's q, k and v projections as one (3d, d) matrix (and biases), and SwiGLU's gate and up
    projections as one (2 d_ff, d): one matmul each instead of three and two. The model's own parameters
    become views into these, so nothing is stored twice; if they are replaced (``model.to(...)``, a
    ``load_state_dict`` that assigns), the packing is redone."""
    params = [getattr(block, n, None) for n in ("wq", "wk", "wv", "bq", "bk", "bv", "w1", "w3")]
    ptrs = tuple(p.data_ptr() if p is not None else None for p in params)
    cached = block.__dict__.get("_llmlab_packed")
    if cached is not None and cached[0] == ptrs:
        return cached[1]
    with torch.no_grad():
        def fuse(group):
            if group[0] is None:
                return None
            whole = torch.cat([p.data for p in group])
            offset = 0
            for p in group:
                p.data = whole[offset: offset + p.shape[0]]
                offset += p.shape[0]
            return whole
        result = (fuse(params[0:3]), fuse(params[3:6]), fuse(params[6:8]))  # None where the block has none
    ptrs = tuple(p.data_ptr() if p is not None else None for p in params)
    block.__dict__["_llmlab_packed"] = (ptrs, result)
    return result


def _norm(x: Tensor, norm) -> Tensor:
    """RMSNorm in float32 at least, as Llama computes it, or LayerNorm (torch's fused kernels)."""
    shape = (x.shape[-1],)
    if norm.kind == "layernorm":
        return F.layer_norm(x, shape, norm.weight, norm.bias, norm.eps)
    if x.dtype == torch.float32:
        return F.rms_norm(x, shape, norm.weight, norm.eps)
    return F.rms_norm(x.float(), shape, eps=norm.eps).to(x.dtype) * norm.weight
