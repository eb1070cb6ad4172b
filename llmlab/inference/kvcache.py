"""A slot-based KV cache for llmlab's decoders: Llama-shaped :class:`~llmlab.transformer.TransformerLM`
(and its learned / sinusoidal position variants) and GPT-2 (:class:`~llmlab.gpt2.GPT2LM`).

The cache holds keys and values for ``slots`` sequences, each up to the model's context: a tensor of shape
(slots, heads, context, head_dim) per layer. A sequence owns a slot while it runs; ``lengths[slot]`` says how
many positions are filled. :func:`forward` runs new tokens of several slots at once (a prefill of many
tokens, or one decode token each), writes their keys and values at their positions and attends over each
slot's own prefix only, so sequences of different lengths share one batched step. Rolling a slot back
(speculative decoding's rejected tokens) is just lowering its length.
"""

from __future__ import annotations

import functools

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
        shape = (slots, cfg.n_heads, cfg.context, hd)  # one tensor per layer
        self.k = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in range(cfg.n_layers)]
        self.v = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in range(cfg.n_layers)]
        self.lengths = [0] * slots
        self.free = list(range(slots))[::-1]
        self.context = cfg.context
        self.rope = None  # with rotary positions, cos and sin of every position's angles, computed once
        if cfg.positions == "rope":  # (in float64, then cast)
            cos, sin = T.rope_angles(torch.arange(cfg.context, device=self.device), hd, cfg.rope_theta)
            self.rope = (cos.to(self.dtype), sin.to(self.dtype))

    @property
    def bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.k, *self.v))

    def allocate(self) -> int:
        if not self.free:
            raise RuntimeError("no free KV-cache slot")
        slot = self.free.pop()
        self.lengths[slot] = 0
        return slot

    def compact(self, slots: list[int]) -> list[int]:
        """Move the sequences in ``slots`` (increasing) to slots 0..n-1, keeping their order, and free the
        rest; returns their new slots. The engine compacts after requests leave, so the running requests'
        rows stay one slice of the cache (a view, not a gather, in every step)."""
        if slots != sorted(slots):
            raise ValueError("compact takes slots in increasing order")
        for new, old in enumerate(slots):
            if new != old:
                n = self.lengths[old]
                for t in (*self.k, *self.v):
                    t[new, :, :n] = t[old, :, :n]
                self.lengths[new] = n
        n = len(slots)
        self.lengths[n:] = [0] * (len(self.lengths) - n)
        self.free = list(range(n, len(self.lengths)))[::-1]
        return list(range(n))

    def usage(self) -> float:
        """Share of the cache's positions in use (vLLM's gpu_cache_usage_perc, for a dense cache)."""
        return sum(self.lengths) / (len(self.lengths) * self.context)


@torch.no_grad()
def forward(model, cache: KVCache, slots: list[int], tokens: list[list[int]], logits: bool = True,
            compiled: bool = False) -> list[Tensor]:
    """Run each slot's new ``tokens`` (lists of equal or different lengths) after its cached prefix and
    advance the slots' lengths. Returns each slot's logits (n_new, vocab), float32 on the CPU (one transfer
    per step; sampling runs there, so a seed draws the same tokens on any device), or nothing with
    ``logits=False`` (a prefill whose outputs are not needed skips the head).

    The model's arithmetic is :func:`_layers`, a function of tensors. With ``compiled=True`` steps that give
    every slot the same number of new tokens (decode steps, speculative verification) in slots 0..B-1 run it
    through ``torch.compile`` (:func:`_equal_step`), which fuses the small elementwise
    operations between the matmuls (vLLM compiles its models too). Prefills stay eager: each request runs
    one."""
    dev = cache.device
    n_new = [len(t) for t in tokens]
    starts_list = [cache.lengths[s] for s in slots]
    if any(s + n > cache.context for s, n in zip(starts_list, n_new, strict=True)):
        raise ValueError("sequence longer than the model's context")
    B, L = len(slots), max(n_new)
    equal, total = min(n_new) == L, max(starts_list) + L
    packs = [packed(b) for b in model.blocks]
    if compiled and logits and equal and slots == list(range(B)):  # a prefill runs once per request: eager
        ids, starts, key_pos = (torch.tensor(tokens, device=dev), torch.tensor(starts_list, device=dev),
                                torch.arange(total, device=dev))
        for t in (ids, starts, key_pos):  # batch, new tokens and cached length vary: one graph for all sizes > 1
            for dim, size in enumerate(t.shape):
                if size > 1:
                    torch._dynamo.mark_dynamic(t, dim)
        x = _compiled_step()(model, packs, cache.k, cache.v, cache.rope, ids, starts, key_pos)
    else:
        x = _layers(model, packs, cache.k, cache.v, cache.rope, *_indices(cache, slots, tokens, starts_list))
    for s, n in zip(slots, n_new, strict=True):
        cache.lengths[s] += n
    if not logits:
        return []
    out = F.linear(_norm(x, model.final_norm), model.embed if model.head is None else model.head).float().cpu()
    return [out[b, :n] for b, n in enumerate(n_new)]


def _indices(cache: KVCache, slots: list[int], tokens: list[list[int]], starts_list: list[int]):
    """:func:`_layers`' arguments from ``ids`` on, built on the host for any batch: padded ids, positions,
    the attention mask (None where every key is visible), where each real token's key goes, the cache rows
    to attend over (a slice where the slots are consecutive), and the longest length."""
    dev = cache.device
    n_new = [len(t) for t in tokens]
    B, L = len(slots), max(n_new)
    if min(n_new) == L:  # no padding
        ids = torch.tensor(tokens, device=dev)
    else:
        ids = torch.zeros(B, L, dtype=torch.long, device=dev)
        for b, t in enumerate(tokens):
            ids[b, : len(t)] = torch.tensor(t, device=dev)
    positions = torch.tensor(starts_list, device=dev)[:, None] + torch.arange(L, device=dev)[None, :]  # (B, L)
    lookup = positions.clamp(max=cache.context - 1)  # padding past a short slot's end may pass the context
    ends_list = [s + n for s, n in zip(starts_list, n_new, strict=True)]
    total = max(ends_list)
    mask = None  # one token per slot and slots of one length: every cached key is visible, no mask
    if L > 1 or min(ends_list) != total:  # key j is visible to query (b, i) when j <= position(b, i) < end(b)
        key_pos = torch.arange(total, device=dev)
        ends = torch.tensor(ends_list, device=dev)
        mask = ((key_pos[None, None, :] <= positions[:, :, None]) & (key_pos[None, None, :] < ends[:, None, None]))[
            :, None]
    if B == 1:  # one slot (batch 1, a draft's proposals): its new keys go in as one slice
        writes = (slots[0], starts_list[0], total)
    else:  # (row in the batch, index in its new tokens) of every real token, and the slot and position it goes to
        n_new_t = torch.tensor(n_new, device=dev)
        write_b, write_t = (torch.arange(L, device=dev)[None, :] < n_new_t[:, None]).nonzero(as_tuple=True)
        writes = (write_b, write_t, torch.tensor(slots, device=dev)[write_b], positions[write_b, write_t])
    contiguous = slots == list(range(slots[0], slots[0] + B))
    rows = slice(slots[0], slots[0] + B) if contiguous else torch.tensor(slots, device=dev)
    return ids, lookup, mask, writes, rows, total


def _equal_step(model, packs, k_cache, v_cache, rope, ids, starts, key_pos) -> Tensor:
    """:func:`_layers` for slots 0..B-1 (the running requests, which the engine keeps compacted there) with
    the same number of new tokens each (B, L), positions from ``starts`` (B,), attending over key positions
    ``key_pos`` (0..total-1; a tensor, so its length is a dynamic size): the positions, mask and writes are
    computed here, inside the compiled graph."""
    B, L = ids.shape
    total = key_pos.shape[0]
    positions = starts[:, None] + torch.arange(L, device=ids.device)
    mask = (key_pos <= positions[:, :, None])[:, None]
    rows = torch.arange(B, device=ids.device)[:, None]
    return _layers(model, packs, k_cache, v_cache, rope, ids, positions, mask, (rows, positions), slice(0, B), total)


def _layers(model, packs, k_cache, v_cache, rope, ids, lookup, mask, writes, rows, total: int) -> Tensor:
    """The decoder's blocks over new tokens ``ids`` (B, L) at positions ``lookup``, writing their keys and
    values into the per-layer caches (``writes``: one slot's slice (slot, start, end); index tensors
    (batch row, token index, slot, position) of each real token; or slots (B, 1) and positions (B, L) of
    every token) and attending over the cached rows ``rows`` up to ``total``
    under ``mask``. Returns the final hidden states (B, L, d), before the last norm."""
    cfg = model.config
    B, L = ids.shape
    d, hd = cfg.d_model, cfg.d_model // cfg.n_heads
    x = T.embedding(ids, model.embed)
    if getattr(model, "pos_embed", None) is not None:
        x = x + model.pos_embed[lookup]
    elif cfg.positions == "sinusoidal":
        x = x + model.sinusoid[lookup].to(x.dtype)
    x = x.to(k_cache[0].dtype)
    if rope is not None:
        cos, sin = rope[0][lookup][:, None], rope[1][lookup][:, None]  # (B, 1, L, hd)
    split = lambda t: t.reshape(B, L, cfg.n_heads, hd).transpose(1, 2)  # noqa: E731
    for block, (wqkv, bqkv, w_up), kc, vc in zip(model.blocks, packs, k_cache, v_cache, strict=True):
        q, k, v = (split(t) for t in F.linear(_norm(x, block.attn_norm), wqkv, bqkv).split(d, dim=-1))
        if rope is not None:
            q, k = T.apply_rope(q, cos, sin), T.apply_rope(k, cos, sin)
        if len(writes) == 3:  # new keys and values into their slots at their positions
            slot, start, end = writes
            kc[slot, :, start:end], vc[slot, :, start:end] = k[0], v[0]
        elif len(writes) == 2:
            slot, pos = writes
            kc[slot, :, pos], vc[slot, :, pos] = k.transpose(1, 2), v.transpose(1, 2)
        else:
            b, t, slot, pos = writes
            kc[slot, :, pos], vc[slot, :, pos] = k[b, :, t], v[b, :, t]
        keys, values = kc[rows, :, :total], vc[rows, :, :total]
        if torch.compiler.is_compiling():  # written out, so inductor fuses the mask and softmax into one kernel
            scores = (q @ keys.transpose(-1, -2)) * hd ** -0.5
            y = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1) @ values
        else:
            y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        x = x + F.linear(y.transpose(1, 2).reshape(B, L, d), block.wo, getattr(block, "bo", None))
        h = _norm(x, block.ffn_norm)
        if w_up is None:  # GPT-2
            x = x + block.mlp(h)
        else:  # SwiGLU with the gate and up projections in one matmul
            gate, up = F.linear(h, w_up).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, block.w2)
    return x


@functools.cache
def _compiled_step():
    """:func:`_equal_step` through torch.compile (inductor), built on first use. Batch, new tokens and cached
    length are dynamic sizes, and torch specialises sizes of 1, so a model takes up to four graphs (one slot
    or more, one new token or more); the limit is raised above dynamo's default of 8 graphs to leave room
    for a target and a draft. ``cpp_wrapper``: inductor writes the code that calls the kernels in C++ rather
    than Python, which took a batch-8 decode step of the bench target from about 6.5 to 5.0 ms here (the
    Python wrapper's tensor bookkeeping cost about 0.5 ms a step), at the price of a longer warm-up."""
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 32)
    return torch.compile(_equal_step, fullgraph=True, options={"cpp_wrapper": True})


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
