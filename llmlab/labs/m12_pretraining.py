"""Lab m12: large-batch and mixed-precision training. bf16 from the float32 bits, dynamic loss scaling,
ZeRO's partitioning and memory formulas measured against DeepSpeed, activation checkpointing, MFU, and
learning rates for large batches; the deliverable pretrains a Llama-style LM with DeepSpeed ZeRO-3, bf16
and activation checkpointing as a Ray Train job (``llmlab pretrain``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from llmlab.distributed import checkpointing, zero
from llmlab.labs.base import CheckContext, Lab, LabLimits
from llmlab.plots import figure

LAB = Lab("m12", module=__name__, reference="llmlab.distributed.precision",
          spec=["bf16_round", "loss_scale_updates", "llmlab.distributed.zero:partition_flat",
                "llmlab.distributed.zero:gather_flat", "llmlab.distributed.zero:zero_model_state_bytes",
                "llmlab.distributed.checkpointing:checkpoint_segment",
                "llmlab.distributed.throughput:flops_per_token", "llmlab.distributed.throughput:scaled_lr"],
          limits=LabLimits(call_timeout_s=60, total_timeout_s=300, memory_mb=2048),
          own_work="bf16 rounding on the int32 bits, the loss-scale schedule, ZeRO's partition and memory "
                   "formula, a re-entrant checkpointed segment (a torch.autograd.Function)",
          # callables, not the package: torch imports torch.utils.checkpoint itself, so an import block never bites
          forbidden=("torch.utils.checkpoint:checkpoint", "torch.utils.checkpoint:checkpoint_sequential", "deepspeed"),
          ray_workload=True)


def _bits_to_float(bits: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(bits.astype(np.uint32).view(np.int32).copy()).view(torch.float32)


@LAB.check(points=3, grades="BF16")
def bf16_rounding(ctx: CheckContext):
    """bf16_round(x) equals torch's float32 -> bfloat16 conversion bit for bit: on random magnitudes, on
    exact ties (low 16 bits 0x8000, to even both ways), just above and below ties, subnormals, values that
    round up to inf, +-inf and +-0; NaN stays NaN."""
    n = 4000
    high = ctx.rng.integers(0, 2**16, n, dtype=np.uint64) << 16
    low = np.concatenate([np.full(n // 4, 0x8000), np.full(n // 4, 0x8001), np.full(n // 4, 0x7FFF),
                          ctx.rng.integers(0, 2**16, n - 3 * (n // 4))]).astype(np.uint64)
    x = torch.cat([_bits_to_float(high | low), torch.tensor([0.0, -0.0, math.inf, -math.inf, 3.4028235e38,
                                                             -3.3961e38, 1e-40, -3e-42, 1e-45])])
    x = x[~torch.isnan(x)]
    got = ctx.tensor(ctx.call("bf16_round", x.clone()), "rounded values", dtype=torch.float32, shape=tuple(x.shape),
                     finite=False)
    want = x.to(torch.bfloat16).float()
    wrong = (got.view(torch.int32) != want.view(torch.int32)).nonzero().flatten()
    ctx.expect(len(wrong) == 0, f"{len(wrong)} of {len(x)} values differ from round-to-nearest-even; e.g. "
               + ", ".join(f"{x[i].item()!r} -> {got[i].item()!r} (want {want[i].item()!r})" for i in wrong[:3]))
    nan = ctx.tensor(ctx.call("bf16_round", torch.tensor([math.nan, 1.0])), "NaN input", dtype=torch.float32,
                     shape=(2,), finite=False)
    ctx.expect(bool(torch.isnan(nan[0])) and nan[1].item() == 1.0, "NaN must stay NaN (and 1.0 stay 1.0)")


def _grad_scaler_reference(flags, init, growth, backoff, interval):
    """torch.amp.GradScaler on CPU stepping a parameter whose gradient is inf at the flagged steps."""
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=init, growth_factor=growth, backoff_factor=backoff,
                                  growth_interval=interval)
    scales, skipped = [], []
    for inf in flags:
        scaler.scale(torch.tensor(1.0))
        scales.append(scaler.get_scale())
        before = p.detach().clone()
        p.grad = torch.full((2,), math.inf if inf else scales[-1])  # a scaled gradient, 1.0 once unscaled
        scaler.step(opt)
        scaler.update()
        skipped.append(bool(torch.equal(before, p.detach())))
    return scales, skipped


@LAB.check(points=2, grades="BF16")
def dynamic_loss_scaling(ctx: CheckContext):
    """loss_scale_updates(found_inf, ...) gives the scale of every step and the skipped steps exactly as
    torch.amp.GradScaler does when the flagged steps overflow (backoff and skip on overflow, growth after
    growth_interval clean steps in a row)."""
    for _ in range(3):
        flags = (ctx.rng.random(ctx.randint(20, 80)) < ctx.rng.uniform(0.05, 0.4)).tolist()
        init, interval = float(2 ** ctx.randint(4, 17)), ctx.randint(2, 6)
        growth, backoff = ctx.choice([2.0, 4.0]), ctx.choice([0.5, 0.25])
        want_scales, want_skipped = _grad_scaler_reference(flags, init, growth, backoff, interval)
        got = ctx.call("loss_scale_updates", flags, init, growth, backoff, interval)
        ctx.expect(isinstance(got, dict), "loss_scale_updates returns a dict")
        scales, skipped = got.get("scales"), got.get("skipped")
        ctx.expect(isinstance(scales, list) and isinstance(skipped, list) and len(scales) == len(skipped) == len(flags),
                   f"scales and skipped must be lists of {len(flags)} entries, one per step")
        ctx.close(torch.tensor([ctx.number(v, "scale") for v in scales], dtype=torch.float64),
                  torch.tensor(want_scales, dtype=torch.float64), atol=0, what="scale at each step")
        ctx.expect([ctx.boolean(s, "skipped") for s in skipped] == want_skipped,
                   "skipped steps differ from GradScaler's (a step with an inf/NaN gradient is skipped)")


@LAB.check(points=2, grades="ZeRO (stage 3)")
def zero_partition(ctx: CheckContext):
    """partition_flat(flat, world_size) gives rank r the r-th of world_size equal contiguous slices of the
    zero-padded tensor (DeepSpeed ZeRO-3's layout, ceil(numel / world_size) each), and gather_flat puts any
    slices back exactly, padding dropped."""
    for _ in range(4):
        numel, ws = ctx.randint(1, 500), ctx.randint(1, 9)
        flat = ctx.randn(numel, dtype=torch.float32)
        shards = ctx.call("partition_flat", flat.clone(), ws)
        ctx.expect(isinstance(shards, list | tuple) and len(shards) == ws, f"want {ws} shards")
        size = math.ceil(numel / ws)
        want = torch.cat([flat, torch.zeros(size * ws - numel)]).view(ws, size)
        for r, shard in enumerate(shards):
            ctx.close(ctx.tensor(shard, f"shard {r}", shape=(size,)), want[r], atol=0, what=f"rank {r}'s shard")
        back = ctx.tensor(ctx.call("gather_flat", [s.clone() for s in want], numel), "gathered", shape=(numel,))
        ctx.close(back, flat, atol=0, what="gathered tensor")


@LAB.check(points=2, grades="pretraining with bf16 ZeRO-3")
def zero_memory_formula(ctx: CheckContext):
    """zero_model_state_bytes(psi, N_d, stage, k) reproduces the ZeRO paper's Figure 1 (7.5B parameters,
    64 GPUs, K = 12: 120, 31.4, 16.6 and 1.9 GB per GPU at stages 0-3) and its Section 5 formulas for random
    sizes, world sizes and K."""
    for stage, gb in enumerate((120.0, 31.4, 16.6, 1.9)):
        got = ctx.number(ctx.call("zero_model_state_bytes", 7.5e9, 64, stage, 12), "bytes")
        ctx.close(got / 1e9, gb, atol=0.05, what=f"stage {stage} for the paper's 7.5B model on 64 GPUs (GB)")
    for _ in range(6):
        psi, nd, k = 10 ** ctx.rng.uniform(6, 11), ctx.randint(1, 1025), ctx.choice([12, 16, 8])
        stage = ctx.randint(0, 4)
        want = [(4 + k) * psi, 4 * psi + k * psi / nd, 2 * psi + (2 + k) * psi / nd, (4 + k) * psi / nd][stage]
        got = ctx.number(ctx.call("zero_model_state_bytes", psi, nd, stage, k), "bytes")
        ctx.close(got, want, atol=0, rtol=1e-9, what=f"stage {stage}, psi={psi:.3g}, N_d={nd}, K={k}")


def probe_checkpoint(sub, x, w1, w2, r):
    """In the sandbox: the learner's checkpointed two-layer segment; how often it ran, with grad mode on or
    off, and the bytes autograd saved."""
    x, w1, w2 = (t.clone().requires_grad_(True) for t in (x, w1, w2))
    modes = []

    def segment(h):
        modes.append(torch.is_grad_enabled())
        return torch.tanh(torch.tanh(h @ w1) @ w2) * 2.0

    saved = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in (w1.untyped_storage().data_ptr(), w2.untyped_storage().data_ptr()):
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = sub.checkpoint_segment(segment, x)
    forward_modes = list(modes)
    (out * r).sum().backward()
    return [out.detach(), x.grad, w1.grad, w2.grad, sum(saved.values()), forward_modes, modes[len(forward_modes):]]


@LAB.check(points=3, grades="activation checkpointing")
def checkpointed_segment(ctx: CheckContext):
    """checkpoint_segment(fn, x) returns fn(x) and the same gradients for x and for the weights fn uses
    (1e-12, float64); during the forward pass fn runs once without autograd and only the input is saved; the
    backward pass runs fn once more, with autograd."""
    B, d, h = ctx.randint(2, 6), ctx.randint(8, 24), ctx.randint(16, 48)
    x, w1, w2, r = ctx.randn(B, d), ctx.randn(d, h) / math.sqrt(d), ctx.randn(h, d) / math.sqrt(h), ctx.randn(B, d)
    got = ctx.run(probe_checkpoint, x, w1, w2, r)
    ctx.expect(isinstance(got, list) and len(got) == 7, "the probe did not complete")
    out, gx, g1, g2 = (ctx.tensor(v, name, shape=s) for v, name, s in
                       zip(got[:4], ("output", "grad x", "grad w1", "grad w2"), (x.shape, x.shape, w1.shape, w2.shape),
                           strict=True))
    tx, t1, t2 = (t.clone().requires_grad_(True) for t in (x, w1, w2))
    want = torch.tanh(torch.tanh(tx @ t1) @ t2) * 2.0
    (want * r).sum().backward()
    for a, b, what in ((out, want.detach(), "output"), (gx, tx.grad, "grad of the input"), (g1, t1.grad, "grad of w1"),
                       (g2, t2.grad, "grad of w2")):
        ctx.close(a, b, atol=1e-12, what=what)
    saved, forward_modes, backward_modes = ctx.number(got[4], "saved bytes", integer=True), got[5], got[6]
    ctx.expect(forward_modes == [False], f"in the forward pass fn must run once with autograd off (ran with "
               f"grad modes {forward_modes}): nothing inside it may be recorded")
    ctx.expect(saved <= x.numel() * 8, f"{saved} bytes saved for backward; a checkpoint keeps only its input "
               f"({x.numel() * 8} bytes)")
    ctx.expect(backward_modes == [True], f"the backward pass must recompute fn once with autograd on (ran with "
               f"grad modes {backward_modes})")


@LAB.check(points=2, grades="tokens/s logged")
def mfu_accounting(ctx: CheckContext):
    """flops_per_token(N, L, T, d) is PaLM's 6N + 12 L T d, the count nanoGPT's estimate_mfu uses; checked
    on GPT-2 small's numbers (85M non-embedding + 38.6M tied head, 12 layers, T=1024, d=768) and random
    shapes."""
    got = ctx.number(ctx.call("flops_per_token", 124_337_664, 12, 1024, 768), "FLOPs per token")
    ctx.close(got, 6 * 124_337_664 + 12 * 12 * 1024 * 768, atol=0, rtol=1e-12, what="GPT-2 small, T=1024")
    for _ in range(4):
        n, layers, t, d = ctx.randint(10**5, 10**9), ctx.randint(1, 80), ctx.randint(16, 8193), ctx.randint(64, 8193)
        want = 6 * n + 12 * layers * t * d
        ctx.close(ctx.number(ctx.call("flops_per_token", n, layers, t, d), "FLOPs per token"), want, atol=0,
                  rtol=1e-12, what=f"N={n}, L={layers}, T={t}, d={d}")


@LAB.check(points=1, grades="large batches")
def large_batch_lr(ctx: CheckContext):
    """scaled_lr(lr, B0, B, rule): lr * B / B0 (linear rule) and lr * sqrt(B / B0) (square-root rule),
    for growing and shrinking batches."""
    for _ in range(4):
        lr, b0, b = 10 ** ctx.rng.uniform(-5, -2), 2 ** ctx.randint(3, 9), 2 ** ctx.randint(2, 14)
        for rule, want in (("linear", lr * b / b0), ("sqrt", lr * math.sqrt(b / b0))):
            ctx.close(ctx.number(ctx.call("scaled_lr", lr, b0, b, rule), "learning rate"), want, atol=0, rtol=1e-12,
                      what=f"{rule} rule, lr={lr:.3g}, {b0} -> {b}")


# --- seeded bugs ---------------------------------------------------------------------------------------------
def bf16_truncate(x):
    return (x.contiguous().view(torch.int32) & -65536).view(torch.float32)


def bf16_ties_away(x):
    bits = x.contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    r = (bits + 0x8000) & ~0xFFFF
    return torch.where(r >= 2**31, r - 2**32, r).to(torch.int32).view(torch.float32)


def loss_scale_no_skip(found_inf, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000):
    from llmlab.distributed.precision import loss_scale_updates

    out = loss_scale_updates(found_inf, init_scale, growth_factor, backoff_factor, growth_interval)
    return {**out, "skipped": [False] * len(found_inf)}


def loss_scale_keeps_count(found_inf, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000):
    scale, good, scales = float(init_scale), 0, []
    for inf in found_inf:
        scales.append(scale)
        scale = scale * backoff_factor if inf else scale
        good += not inf
        if good and good % growth_interval == 0 and not inf:
            scale *= growth_factor
    return {"scales": scales, "skipped": list(found_inf), "final_scale": scale}


def partition_strided(flat, world_size):
    size = math.ceil(flat.numel() / world_size)
    padded = torch.cat([flat, flat.new_zeros(size * world_size - flat.numel())])
    return [padded[r::world_size].clone() for r in range(world_size)]


def memory_stage2_splits_params(psi, world_size, stage, k=12):
    return zero.zero_model_state_bytes(psi, world_size, 3 if stage == 2 else stage, k)


def checkpoint_keeps_graph(fn, *args):
    return fn(*args)


def checkpoint_detached(fn, *args):
    class _NoParamGrads(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            with torch.no_grad():
                return fn(x)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            with torch.enable_grad():
                x = x.detach().requires_grad_(True)
                return torch.autograd.grad(fn(x), x, g)[0]  # the weights' gradients are never accumulated

    return _NoParamGrads.apply(*args)


def flops_without_attention(n_params, n_layers, context, d_model):
    return 6 * n_params


def scaled_lr_sqrt_as_linear(base_lr, base_batch, batch, rule="linear"):
    return base_lr * batch / base_batch


LAB.bug("bf16_truncates", bf16_round=bf16_truncate)
LAB.bug("bf16_ties_away_from_zero", bf16_round=bf16_ties_away)
LAB.bug("overflow_step_not_skipped", loss_scale_updates=loss_scale_no_skip)
LAB.bug("growth_count_survives_overflow", loss_scale_updates=loss_scale_keeps_count)
LAB.bug("partition_strided", partition_flat=partition_strided)
LAB.bug("stage2_partitions_parameters", zero_model_state_bytes=memory_stage2_splits_params)
LAB.bug("checkpoint_keeps_activations", checkpoint_segment=checkpoint_keeps_graph)
LAB.bug("checkpoint_drops_weight_grads", checkpoint_segment=checkpoint_detached)
LAB.bug("mfu_without_attention", flops_per_token=flops_without_attention)
LAB.bug("sqrt_rule_is_linear", scaled_lr=scaled_lr_sqrt_as_linear)


# --- deliverable ---------------------------------------------------------------------------------------------
def _pretrain_section(profile: str, out: Path) -> tuple[dict, str]:
    from llmlab.distributed import pretrain
    from llmlab.scaling.planner import peak_flops

    cfg = pretrain.FULL if profile == "full" else pretrain.QUICK
    summary = pretrain.pretrain(cfg, out / "run")
    hist = summary["history"]
    device = "h200" if cfg.gpus_per_worker else "cpu"
    peak = peak_flops(device) * (cfg.workers if cfg.gpus_per_worker == 0 else cfg.workers * cfg.gpus_per_worker)
    mfu = summary["tokens_per_s"] * summary["flops_per_token"] / peak
    same = _same_logits_in_transformers(out / "run" / "model")
    with figure(out / "pretraining_loss.png", f"ZeRO-{cfg.zero_stage} bf16 pretraining on Ray Train "
                f"({cfg.workers} workers)", ncols=2) as (a, b):
        a.plot([r["tokens"] for r in hist], [r["train_loss"] for r in hist], "o-", label="train")
        a.plot([r["tokens"] for r in hist], [r["val_loss"] for r in hist], "s-", label="validation")
        a.set_xlabel("tokens")
        a.set_ylabel("loss (nats/token)")
        a.legend()
        b.plot([r["tokens"] for r in hist], [r["tokens_per_s"] for r in hist], "o-")
        b.set_xlabel("tokens")
        b.set_ylabel("tokens/s (all workers, cumulative)")
    sweep = summary["stage_sweep"]
    if sweep:
        with figure(out / "zero_memory.png", f"Model-state bytes per rank ({cfg.workers} ranks, "
                    f"{summary['params'] / 1e6:.2f}M params)") as ax:
            xs = np.arange(len(sweep))
            for i, (key, label) in enumerate((("bytes_between_steps", "measured between steps"),
                                              ("bytes_after_backward", "measured after backward"),
                                              ("formula_bytes", "ZeRO paper's formula"))):
                ax.bar(xs + (i - 1) * 0.27, [s[key] / s["params"] for s in sweep], 0.27, label=label)
            ax.set_xticks(xs, [f"stage {s['stage']}" for s in sweep])
            ax.set_ylabel("bytes per parameter")
            ax.legend()
    metrics = {"params": summary["params"], "world_size": summary["world_size"], "config": summary["config"],
               "first_val_loss": hist[0]["val_loss"], "final_val_loss": hist[-1]["val_loss"],
               "tokens_per_s": summary["tokens_per_s"], "flops_per_token": summary["flops_per_token"],
               "peak_flops": peak, "mfu": mfu, "history": hist, "stage_sweep": sweep,
               "seconds": summary["seconds"], "transformers_max_logit_diff": same,
               "zero3_layout_is_partition_flat": summary["zero3_layout_is_partition_flat"]}
    rows = "\n".join(f"| {s['stage']} | {s['bytes_between_steps'] / s['params']:.2f} | "
                     f"{s['bytes_after_backward'] / s['params']:.2f} | {s['formula_bytes'] / s['params']:.2f} | "
                     f"{s['tokens_per_s']:,.0f} |" for s in sweep)
    report = f"""
## Pretraining with DeepSpeed ZeRO-{cfg.zero_stage}, bf16, activation checkpointing, on Ray Train
A Llama-style LM of {summary['params'] / 1e6:.2f}M parameters ({cfg.n_layers} layers, width {cfg.d_model}) on
character-level Tiny Shakespeare, {cfg.workers} Ray Train workers ({'GPU' if cfg.gpus_per_worker else 'CPU, gloo'}),
{cfg.steps} steps of {cfg.tokens_per_step:,} tokens. Validation loss {hist[0]['val_loss']:.3f} after the first step,
{hist[-1]['val_loss']:.3f} at the end; **{summary['tokens_per_s']:,.0f} tokens/s** over all workers; MFU
{100 * mfu:.2f}% of {peak:.3g} FLOP/s ({'the measured float32 matmul peak of this CPU; a CPU without bf16 '
'instructions runs bf16 matmuls several times slower than float32' if device == 'cpu' else 'the bf16 peak'}).
The ZeRO-3 partitions were gathered into one Hugging Face folder; transformers' LlamaForCausalLM gives the
same logits as llmlab's model (max difference {same:.2e}).

![loss](pretraining_loss.png)

### Memory per rank at each ZeRO stage (bytes per parameter, {cfg.workers} ranks)
Measured as every tensor storage a rank can reach, once the optimizer states exist, against ZeRO's formula
for bf16 parameters and gradients and K = 12 bytes of Adam state. Between steps, stages 0-2 hold the bf16
parameters (2 bytes, or 2/N_d at stage 3) plus their share of the Adam state: DeepSpeed frees gradients
after the step, which the formula counts. At stage 3 it keeps more buffers per parameter between steps than
the formula has, so with only two ranks stage 3 holds more than stage 2 here; the formula's saving grows
with N_d.

| stage | between steps | after backward | formula | tokens/s |
|---|---|---|---|---|
{rows}

![zero](zero_memory.png)
"""
    return metrics, report


def _same_logits_in_transformers(folder: Path) -> float:
    from transformers import AutoModelForCausalLM

    from llmlab import hf

    ours = hf.load(folder)
    theirs = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = torch.randint(0, ours.config.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return float((ours(ids) - theirs(ids).logits).abs().max())


def _checkpointing_section(profile: str, out: Path) -> tuple[dict, str]:
    from llmlab.transformer import TransformerConfig, TransformerLM

    d, layers, T, B = (256, 8, 256, 8) if profile == "full" else (128, 4, 128, 8)
    model = TransformerLM(TransformerConfig(65, context=T, d_model=d, n_layers=layers, n_heads=4), seed=0)
    ids = torch.randint(0, 65, (B, T + 1), generator=torch.Generator().manual_seed(0))
    rows = checkpointing.memory_time_trade(model, ids)
    ratio_mem = rows["checkpointed"]["saved_bytes"] / rows["plain"]["saved_bytes"]
    ratio_time = rows["checkpointed"]["step_seconds"] / rows["plain"]["step_seconds"]
    with figure(out / "activation_checkpointing.png", "Activation checkpointing: memory for time", ncols=2) as (a, b):
        a.bar(list(rows), [r["saved_bytes"] / 2**20 for r in rows.values()], color=["gray", "tab:blue"])
        a.set_ylabel("activations saved for backward (MiB)")
        b.bar(list(rows), [r["step_seconds"] * 1e3 for r in rows.values()], color=["gray", "tab:blue"])
        b.set_ylabel("forward + backward (ms)")
    report = f"""
## Activation checkpointing: memory for time
{layers} blocks of width {d}, batch {B} x {T} tokens, float32: checkpointing every block keeps
{ratio_mem:.1%} of the activation bytes ({rows['plain']['saved_bytes'] / 2**20:.1f} MiB ->
{rows['checkpointed']['saved_bytes'] / 2**20:.1f} MiB) for {ratio_time:.2f}x the time of a forward and backward
pass (one more forward; Chen et al. predict about 1.33x).

![ckpt](activation_checkpointing.png)
"""
    return {"activation_checkpointing": rows, "checkpoint_memory_ratio": ratio_mem,
            "checkpoint_time_ratio": ratio_time}, report


def _large_batch_section(profile: str, out: Path) -> tuple[dict, str]:
    from llmlab.data import shakespeare
    from llmlab.distributed import large_batch

    tok, train, val = shakespeare.char_tokens()
    base_batch, base_lr, T = 8, 1e-3, 64
    batches, budget = ((8, 32, 128), 8 * T * 2000) if profile == "full" else ((8, 64), 8 * T * 200)
    curves = large_batch.lr_rules(train, val, tok.vocab_size, batches, budget, base_lr, T)
    big, k = batches[-1], 4
    accum_diff = large_batch.accumulation_gap(train, val, tok.vocab_size, big, k, base_lr)
    with figure(out / "large_batch_lr.png", f"Same {budget:,} tokens, larger batches") as ax:
        ax.axhline(curves["base"][str(base_batch)], color="gray", ls="--", label=f"batch {base_batch}, lr {base_lr:g}")
        for rule, marker in (("linear", "o-"), ("sqrt", "s-")):
            ax.semilogx([int(b) for b in curves[rule]], list(curves[rule].values()), marker, label=f"{rule} rule")
        ax.set_xlabel("batch (sequences)")
        ax.set_ylabel("validation loss after the budget")
        ax.legend()
    rows = "\n".join(f"| {b} | {curves['linear'][b]:.3f} | {curves['sqrt'][b]:.3f} |" for b in curves["linear"])
    report = f"""
## Large batches: the learning-rate rule, with warm-up
Base: batch {base_batch}, AdamW at lr {base_lr:g}; every run sees the same {budget:,} tokens (fewer steps for
larger batches), with linear warm-up over the first 10% of steps. Validation loss (base:
{curves['base'][str(base_batch)]:.3f}):

| batch | linear rule | square-root rule |
|---|---|---|
{rows}

Gradient accumulation: {k} micro-batches of {big // k} give the parameters of one batch of {big} after 5 AdamW
steps to within {accum_diff:.1e} (float32 summation order).

![lr](large_batch_lr.png)
"""
    return {"large_batch": curves, "grad_accumulation_max_param_diff": accum_diff}, report


def run(profile: str, out: Path) -> tuple[dict, str]:
    torch.manual_seed(0)
    metrics, report = {}, ""
    for section in (_pretrain_section, _checkpointing_section, _large_batch_section):
        m, r = section(profile, out)
        metrics |= m
        report += r
    return metrics, report
