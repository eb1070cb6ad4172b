"""Lab m08: attention mechanics. Scaled dot-product attention from scratch with causal, boolean and padding
masks (checked against ``torch.nn.functional.scaled_dot_product_attention`` in float64), a softmax that
does not overflow, attention entropy against temperature, and the measured O(n^2 d) cost."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torch.utils.flop_counter import FlopCounterMode

from llmlab import attention
from llmlab.labs.base import CheckContext, Lab, LabLimits
from llmlab.plots import figure

LAB = Lab("m08", module=__name__, reference="llmlab.attention",
          spec=["stable_softmax", "scaled_dot_product_attention", "attention_entropy"],
          limits=LabLimits(call_timeout_s=30, total_timeout_s=180, memory_mb=2048),
          own_work=("a numerically stable softmax, masked scaled dot-product attention and attention entropy, from "
                    "exp, max and sums"),
          forbidden=("torch:softmax", "torch:log_softmax", "torch:Tensor.softmax", "torch:Tensor.log_softmax",
                     "torch.nn.functional:softmax", "torch.nn.functional:log_softmax", "torch.special:softmax",
                     "torch.special:log_softmax", "torch:logsumexp", "torch:Tensor.logsumexp", "torch.nn:Softmax",
                     "torch.nn.functional:scaled_dot_product_attention",
                     "torch.nn.functional:multi_head_attention_forward", "torch.nn:MultiheadAttention",
                     "scipy.special:softmax", "scipy.special:logsumexp", "scipy.stats:entropy"))


def _qkv(ctx: CheckContext, B: int, H: int, T: int, d: int):
    return ctx.randn(B, H, T, d), ctx.randn(B, H, T, d), ctx.randn(B, H, T, d)


@LAB.check(points=3, grades="single-head attention from scratch")
def matches_torch_sdpa(ctx: CheckContext):
    """scaled_dot_product_attention equals torch's SDPA within 1e-6 (float64): no mask, causal, a random
    boolean mask, and causal + key padding (right-padded batch)."""
    B, H, T, d = 2, 3, ctx.randint(5, 17), ctx.choice([4, 8, 16])
    q, k, v = _qkv(ctx, B, H, T, d)
    ctx.close(ctx.call("scaled_dot_product_attention", q, k, v), F.scaled_dot_product_attention(q, k, v),
              atol=1e-6, what="no mask")
    ctx.close(ctx.call("scaled_dot_product_attention", q, k, v, causal=True),
              F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-6, what="causal")
    mask = torch.from_numpy(ctx.rng.random((T, T)) < 0.6)
    mask[:, 0] = True  # every query keeps a key
    ctx.close(ctx.call("scaled_dot_product_attention", q, k, v, mask=mask),
              F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-6, what="boolean mask")
    lengths = [T, ctx.randint(1, T)]
    pad = torch.arange(T)[None, :] >= torch.tensor(lengths)[:, None]  # (B, T), True = padding
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(T, T, dtype=torch.bool).tril()
                                          & ~pad[:, None, None, :])
    ctx.close(ctx.call("scaled_dot_product_attention", q, k, v, causal=True, key_padding_mask=pad), want,
              atol=1e-6, what="causal + key padding")


@LAB.check(points=1, grades="single-head attention from scratch")
def softmax_is_stable(ctx: CheckContext):
    """stable_softmax equals torch.softmax for logits of size 1e4 (no inf/NaN) and gives 0 at -inf."""
    x = ctx.randn(6, 9) * 1e4
    ctx.close(ctx.call("stable_softmax", x), torch.softmax(x, -1), atol=1e-12, what="softmax of logits ~1e4")
    x[:, 3] = float("-inf")
    got = ctx.call("stable_softmax", x)
    ctx.expect(bool((got[:, 3] == 0).all()), "a -inf logit must get probability 0")
    ctx.close(got.sum(-1), torch.ones(6, dtype=torch.float64), atol=1e-12, what="row sums")


@LAB.check(points=1, grades="single-head attention from scratch")
def large_scores_in_attention(ctx: CheckContext):
    """Attention on inputs scaled by 1e3 (scores ~1e6) stays finite and equals torch's SDPA."""
    q, k, v = _qkv(ctx, 1, 2, 8, 8)
    got = ctx.call("scaled_dot_product_attention", q * 1e3, k * 1e3, v, causal=True)
    ctx.close(got, F.scaled_dot_product_attention(q * 1e3, k * 1e3, v, is_causal=True), atol=1e-6,
              what="attention with scores ~1e6")


@LAB.check(points=2, grades="masking")
def masks_hide_what_they_should(ctx: CheckContext):
    """Changing future tokens never changes a causal output; changing padded keys/values never changes a
    padded-batch output."""
    q, k, v = _qkv(ctx, 1, 1, 10, 8)
    t = ctx.randint(1, 9)
    k2, v2 = k.clone(), v.clone()
    k2[..., t + 1:, :] += ctx.randn(1, 1, 9 - t, 8) * 5
    v2[..., t + 1:, :] += ctx.randn(1, 1, 9 - t, 8) * 5
    a = ctx.nondegenerate(ctx.call("scaled_dot_product_attention", q, k, v, causal=True), "causal output")
    ctx.close(a[..., 0, :], v[..., 0, :], atol=1e-9, what="causal output at position 0 (it sees only itself)")
    a = a[..., : t + 1, :]
    b = ctx.call("scaled_dot_product_attention", q, k2, v2, causal=True)[..., : t + 1, :]
    ctx.close(b, a, atol=1e-12, what=f"causal outputs up to position {t} after changing later tokens")
    pad = torch.zeros(1, 10, dtype=torch.bool)
    pad[0, t + 1:] = True
    a = ctx.nondegenerate(ctx.call("scaled_dot_product_attention", q, k, v, key_padding_mask=pad), "padded output")
    ctx.close(a, F.scaled_dot_product_attention(q, k, v, attn_mask=~pad[:, None, None, :]), atol=1e-6,
              what="padded output against torch's SDPA")
    b = ctx.call("scaled_dot_product_attention", q, k2, v2, key_padding_mask=pad)
    ctx.close(b, a, atol=1e-12, what="outputs after changing padded keys and values")


@LAB.check(points=2, grades="entropy vs temperature on a toy sequence")
def entropy_against_temperature(ctx: CheckContext):
    """attention_entropy equals scipy.stats.entropy of softmax(scores/T) (nats, 1e-8); T -> 0 gives ~0,
    T -> inf gives ~log n, and entropy grows with T."""
    n = ctx.randint(4, 30)
    scores = ctx.randn(5, n) * 3
    for T in (0.5, 1.0, 2.0):
        want = stats.entropy(torch.softmax(scores / T, -1).numpy(), axis=-1)
        ctx.close(ctx.call("attention_entropy", scores, T), torch.from_numpy(want), atol=1e-8,
                  what=f"entropy at T={T}")
    cold = ctx.call("attention_entropy", scores, 1e-4)
    hot = ctx.call("attention_entropy", scores, 1e6)
    ctx.close(cold, torch.zeros(5, dtype=torch.float64), atol=1e-6, what="entropy as T -> 0")
    ctx.close(hot, torch.full((5,), math.log(n), dtype=torch.float64), atol=1e-4, what="entropy as T -> inf")
    curve = torch.stack([ctx.call("attention_entropy", scores, T) for T in (0.1, 0.3, 1, 3, 10)])
    ctx.expect(bool((curve.diff(dim=0) >= -1e-12).all()), "entropy must not decrease as temperature grows")


# --- seeded bugs --------------------------------------------------------------------------------------
def sdpa_unscaled(q, k, v, mask=None, causal=False, key_padding_mask=None, scale=None):
    return attention.scaled_dot_product_attention(q, k, v, mask, causal, key_padding_mask, scale=1.0)


def sdpa_causal_off_by_one(q, k, v, mask=None, causal=False, key_padding_mask=None, scale=None):
    if causal:  # lets each query see one token into the future
        T = q.shape[-2]
        extra = torch.ones(T, k.shape[-2], dtype=torch.bool).tril(1)
        mask = extra if mask is None else mask & extra
    return attention.scaled_dot_product_attention(q, k, v, mask, False, key_padding_mask, scale)


def sdpa_pads_queries(q, k, v, mask=None, causal=False, key_padding_mask=None, scale=None):
    out = attention.scaled_dot_product_attention(q, k, v, mask, causal, None, scale)
    if key_padding_mask is not None:  # zeroes padded positions' outputs instead of hiding padded keys
        out = out.masked_fill(key_padding_mask[:, None, :, None], 0.0)
    return out


def naive_softmax(x, dim=-1):
    e = torch.exp(x)
    return e / e.sum(dim=dim, keepdim=True)


def sdpa_naive_softmax(q, k, v, mask=None, causal=False, key_padding_mask=None, scale=None):
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale
    allowed = attention.attention_mask(q.shape[-2], k.shape[-2], causal=causal, mask=mask,
                                       key_padding_mask=key_padding_mask)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    return naive_softmax(scores) @ v


def entropy_bits(scores, temperature=1.0):
    return attention.attention_entropy(scores, temperature) / math.log(2)


def entropy_times_temperature(scores, temperature=1.0):
    return attention.attention_entropy(scores * temperature, 1.0)


LAB.bug("unscaled_scores", scaled_dot_product_attention=sdpa_unscaled)
LAB.bug("causal_off_by_one", scaled_dot_product_attention=sdpa_causal_off_by_one)
LAB.bug("padding_on_queries", scaled_dot_product_attention=sdpa_pads_queries)
LAB.bug("overflowing_softmax", stable_softmax=naive_softmax, scaled_dot_product_attention=sdpa_naive_softmax)
LAB.bug("entropy_in_bits", attention_entropy=entropy_bits)
LAB.bug("temperature_inverted", attention_entropy=entropy_times_temperature)


# --- deliverable --------------------------------------------------------------------------------------
def _time(fn, repeat: int) -> float:
    fn()
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _flops(fn) -> int:
    """The matrix-product FLOPs ``fn`` runs, counted by torch's own FlopCounterMode (the independent reference)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def run(profile: str, out: Path) -> tuple[dict, str]:
    big = profile == "full"
    torch.manual_seed(0)
    # correctness against torch on a random batch
    q, k, v = (torch.randn(4, 4, 64, 32, dtype=torch.float64) for _ in range(3))
    err = float((attention.scaled_dot_product_attention(q, k, v, causal=True)
                 - F.scaled_dot_product_attention(q, k, v, is_causal=True)).abs().max())

    # entropy against temperature on a toy sequence: one query over 16 keys, one of them strongly matching
    keys = torch.randn(16, 8, dtype=torch.float64)
    query = keys[3] * 1.5 + 0.3 * torch.randn(8, dtype=torch.float64)
    scores = (keys @ query) / math.sqrt(8)
    temps = np.logspace(-2, 2, 60)
    ent = [float(attention.attention_entropy(scores, float(t))) for t in temps]
    with figure(out / "entropy_vs_temperature.png", "Attention entropy vs temperature (16 keys)") as ax:
        ax.semilogx(temps, ent, label="entropy of softmax(s/T)")
        ax.axhline(math.log(16), color="k", ls=":", label="log 16 (uniform)")
        ax.axhline(0, color="gray", ls="--", label="0 (one-hot)")
        ax.set_xlabel("temperature T")
        ax.set_ylabel("entropy (nats)")
        ax.legend()

    # an attention map with causal + padding masks
    T = 12
    pad = torch.zeros(1, T, dtype=torch.bool)
    pad[0, 9:] = True
    qq, kk = torch.randn(1, 1, T, 8, dtype=torch.float64), torch.randn(1, 1, T, 8, dtype=torch.float64)
    eye = torch.eye(T, dtype=torch.float64)[None, None]
    weights = attention.scaled_dot_product_attention(qq, kk, eye, causal=True, key_padding_mask=pad)[0, 0]
    with figure(out / "attention_map.png", "Causal attention, last 3 keys padded") as ax:
        im = ax.imshow(weights.numpy(), cmap="viridis")
        ax.set_xlabel("key position")
        ax.set_ylabel("query position")
        ax.figure.colorbar(im, ax=ax)

    # cost against sequence length (d fixed) and head dim (n fixed), fitted to a * x^b
    sizes = [128, 256, 512, 1024, 2048] + ([4096] if big else [])
    dims = [32, 64, 128, 256, 512]
    repeat = 5 if big else 3
    d0, n0 = 64, 1024
    by_n = [lambda n=n: attention.scaled_dot_product_attention(*(torch.randn(1, 1, n, d0) for _ in range(3)),
                                                                causal=True) for n in sizes]
    by_d = [lambda d=d: attention.scaled_dot_product_attention(*(torch.randn(1, 1, n0, d) for _ in range(3)))
            for d in dims]
    t_n, t_d = [_time(f, repeat) for f in by_n], [_time(f, repeat) for f in by_d]
    a_n, b_n = attention.fit_power_law(sizes[1:], t_n[1:])  # the smallest size is dominated by overheads
    a_d, b_d = attention.fit_power_law(dims, t_d)
    # the operation count, exact and free of this machine's load: 2 n^2 d for q k^T, as much for the weights x v
    f_n, f_d = [_flops(f) for f in by_n], [_flops(f) for f in by_d]
    flop_b_n, flop_b_d = attention.fit_power_law(sizes, f_n)[1], attention.fit_power_law(dims, f_d)[1]
    with figure(out / "cost_vs_length.png", "Attention cost (float32, one head, CPU)", ncols=2) as (ax1, ax2):
        ax1.loglog(sizes, t_n, "o", label="measured")
        ax1.loglog(sizes, [a_n * n ** b_n for n in sizes], "-", label=f"fit n^{b_n:.2f}")
        ax1.loglog(sizes, [t_n[-1] * (n / sizes[-1]) ** 2 for n in sizes], ":", label="n^2")
        ax1.set_xlabel(f"sequence length n (d={d0})")
        ax1.set_ylabel("seconds")
        ax1.legend()
        ax2.loglog(dims, t_d, "o", label="measured")
        ax2.loglog(dims, [a_d * d ** b_d for d in dims], "-", label=f"fit d^{b_d:.2f}")
        ax2.set_xlabel(f"head dim d (n={n0})")
        ax2.legend()
    metrics = {"max_abs_error_vs_torch_sdpa": err,
               "entropy_at_T": {f"{t:.3g}": e for t, e in zip(temps[::10], ent[::10], strict=True)},
               "entropy_limits": {"T_0.01": ent[0], "T_100": ent[-1], "log_n": math.log(16)},
               "cost_exponent_in_n": b_n, "cost_exponent_in_d": b_d,
               "flop_exponent_in_n": flop_b_n, "flop_exponent_in_d": flop_b_d,
               "flops_by_n": dict(zip(map(str, sizes), f_n, strict=True)),
               "seconds_by_n": dict(zip(map(str, sizes), t_n, strict=True))}
    report = f"""
Scaled dot-product attention softmax(q k^T / sqrt(d)) v with causal, boolean and key-padding masks; largest
difference from torch's SDPA on a causal float64 batch: {err:.2e}.

## Entropy against temperature
One query over 16 keys: entropy {ent[0]:.3g} nats at T=0.01 (a one-hot row), {ent[-1]:.4f} at T=100
(uniform: log 16 = {math.log(16):.4f}).

## Cost
Matrix-product FLOPs, counted by torch's FlopCounterMode, grow as n^{flop_b_n:.3f} and d^{flop_b_d:.3f}: exactly
4 n^2 d, 2 n^2 d for q k^T and as much for the weights times v ({f_n[-1]:,} at n = {sizes[-1]}, d = {d0}).
Measured time fitted to a * n^b: b = {b_n:.2f} in the sequence length (theory: 2; the two n x n products
dominate once n is large) and b = {b_d:.2f} in the head dimension at n = {n0} (theory: 1 for the two matrix
products; the softmax over the n x n scores costs the same for every d, which pulls the fitted exponent below 1
at small d). Times depend on this machine and its load; the counts do not.

![entropy](entropy_vs_temperature.png)
![map](attention_map.png)
![cost](cost_vs_length.png)
"""
    return metrics, report
