"""Lab m18: inference optimization and quantization. The rejection-sampling step of speculative decoding
(exact target distribution), INT8 absmax quantization, and one GPTQ column-block update; the deliverable
trains a target and a draft model, measures speculation, quantizes and benchmarks the variants."""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from llmlab.inference import engine as eng
from llmlab.inference import quant, spec_decode
from llmlab.inference.benchmark import benchmark_summary
from llmlab.labs.base import CheckContext, CheckFailed, Lab, LabLimits
from llmlab.plots import figure

LAB = Lab("m18", module=__name__, reference="llmlab.inference.quant",
          spec=["llmlab.inference.spec_decode:rejection_step", "int8_absmax_quantize", "int8_dequantize",
                "gptq_block_update", "llmlab.inference.benchmark:benchmark_summary"],
          limits=LabLimits(call_timeout_s=60, total_timeout_s=240, memory_mb=2048),
          own_work="the rejection step, absmax INT8 quantization, the GPTQ column-block update and the "
                   "benchmark's figures",
          forbidden=("torch:quantize_per_tensor", "torch:quantize_per_channel",
                     "torch.ao.quantization:quantize_dynamic", "bitsandbytes", "auto_gptq", "gptqmodel", "optimum"))


def _dists(ctx: CheckContext, rows: int, V: int, sparse: bool = True) -> torch.Tensor:
    p = torch.from_numpy(ctx.rng.dirichlet(np.full(V, 0.5), size=rows))
    if sparse:
        p = p * torch.from_numpy(ctx.rng.random((rows, V)) > 0.3)
        p[:, 0] += 1e-3
        p = p / p.sum(-1, keepdim=True)
    return p


@LAB.check(points=2, grades="a speculative-decoding wrapper")
def rejection_step_exact(ctx: CheckContext):
    """rejection_step returns the reference's number of accepted tokens and next-token distribution for
    random p, q, drafts and uniforms, including draft tokens p gives probability 0 and perfect drafts (q
    equal to p: all accepted, the bonus token drawn from p's last row)."""
    for trial in range(30):
        k, V = ctx.randint(1, 6), ctx.randint(3, 12)
        p, q = _dists(ctx, k + 1, V), _dists(ctx, k, V)
        if trial % 5 == 0:
            q = p[:k].clone()  # a perfect draft: every token is accepted and the bonus token is drawn
        draft = [int(ctx.rng.choice(V, p=q[i].numpy())) for i in range(k)]
        u = torch.from_numpy(ctx.rng.random(k))
        n, dist = ctx.call("rejection_step", p, q, draft, u)
        want_n, want = spec_decode.rejection_step(p, q, draft, u)
        ctx.expect(int(n) == want_n, f"trial {trial}: {int(n)} accepted, expected {want_n}")
        ctx.close(dist, want, atol=1e-12, what=f"trial {trial}: next-token distribution")


def probe_speculative_samples(sub, p, q, n, seed):
    """Draw n first tokens with the learner's rejection_step (k = 1)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = int(torch.multinomial(q[0], 1, generator=gen))
        accepted, dist = sub.rejection_step(p, q, [x], torch.rand(1, generator=gen, dtype=torch.float64))
        if isinstance(accepted, bool) or not isinstance(accepted, int) or not isinstance(dist, torch.Tensor) \
                or dist.dtype != p.dtype:
            raise TypeError(f"rejection_step must return (an int, a {p.dtype} tensor), not "
                            f"({type(accepted).__name__}, {getattr(dist, 'dtype', type(dist).__name__)})")
        out.append(x if accepted == 1 else int(torch.multinomial(dist, 1, generator=gen)))
    return torch.tensor(out)


@LAB.check(points=2, grades="a speculative-decoding wrapper")
def speculation_keeps_the_target_distribution(ctx: CheckContext):
    """Tokens drawn from the draft and verified by rejection_step follow the target's distribution p
    (chi-square test, 6000 draws, p-value > 1e-4), however different the draft q is."""
    V = 6
    p, q = _dists(ctx, 2, V, sparse=False), _dists(ctx, 1, V, sparse=False)
    q[0] = q[0] ** 3 / (q[0] ** 3).sum()  # a poor draft
    draws = ctx.run(probe_speculative_samples, p, q, 6000, ctx.seed)
    counts = torch.bincount(draws, minlength=V).double()
    pvalue = stats.chisquare(counts.numpy(), (p[0] * 6000).numpy()).pvalue
    ctx.expect(pvalue > 1e-4, f"the tokens do not follow p (chi-square p-value {pvalue:.2e})")


@LAB.check(points=1, grades="a quantized model served (vLLM or the builtin engine)")
def int8_round_trip(ctx: CheckContext):
    """int8_absmax_quantize gives int8 codes with one scale per output row (max |W_row| / 127) and
    int8_dequantize(q, s) is within half a step of W; a row with an outlier does not degrade the others."""
    W = ctx.randn(16, 24)
    W[3, 5] = 50.0
    q, s = ctx.call("int8_absmax_quantize", W)
    ctx.expect(q.dtype == torch.int8, f"codes must be int8, not {q.dtype}")
    want_q, want_s = quant.int8_absmax_quantize(W)
    ctx.close(s.reshape(-1), want_s, atol=1e-12, what="per-row scales")
    back = ctx.call("int8_dequantize", q, s)
    ctx.expect(bool(((back - W).abs() <= want_s[:, None] / 2 + 1e-12).all()), "dequantized weights are off by "
                                                                            "more than half a step")


@LAB.check(points=2, grades="a quantized model served (vLLM or the builtin engine)")
def gptq_block(ctx: CheckContext):
    """gptq_block_update equals the reference (codes exactly, errors within 1e-9) on a random block with a
    real Hessian, and its codes lie on the grid. (Against round-to-nearest GPTQ wins on whole layers, which
    the library's tests check; on one small block it need not.)"""
    d_out, b, bits = ctx.randint(4, 12), ctx.randint(4, 16), ctx.choice([3, 4])
    X = ctx.randn(400, b) @ ctx.randn(b, b)
    W = ctx.randn(d_out, b)
    H = quant.hessian(X) + 0.01 * torch.eye(b, dtype=torch.float64)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    scale, zero = quant.grid_params(W, bits)
    codes, errors = ctx.call("gptq_block_update", W, Hinv, scale, zero, bits)
    want_codes, want_errors = quant.gptq_block_update(W, Hinv, scale, zero, bits)
    ctx.expect(torch.equal(codes.double(), want_codes.double()), "codes differ from the reference")
    ctx.close(errors, want_errors, atol=1e-9, what="propagated errors")
    ctx.expect(bool(((codes >= 0) & (codes <= 2**bits - 1) & (codes == codes.round())).all()),
               f"codes must be integers in [0, {2**bits - 1}]")


@LAB.check(points=1, grades="tokens/s and p95 latency benchmark")
def benchmark_figures(ctx: CheckContext):
    """benchmark_summary of per-request start/end times and token counts: tokens/s and requests/s over the
    run's wall time (first start to last end, overlapping requests counted once), mean and p50/p95/p99
    latency with linear interpolation (NumPy's percentile), within 1e-9; unequal lengths or a request that
    ends before it starts raise ValueError."""
    for n in (1, 7, 200):
        starts = np.sort(ctx.rng.uniform(0, 10, n))
        ends = starts + ctx.rng.lognormal(-1, 1, n)
        tokens = ctx.rng.integers(1, 256, n)
        got = ctx.call("benchmark_summary", starts.tolist(), ends.tolist(), tokens.tolist())
        if not isinstance(got, dict):
            raise CheckFailed(f"benchmark_summary returned a {type(got).__name__}, expected a dict")
        wall, lat = ends.max() - starts.min(), ends - starts
        want = {"tokens_per_s": tokens.sum() / wall, "requests_per_s": n / wall, "mean_latency_s": lat.mean(),
                **{f"p{q}_latency_s": np.percentile(lat, q) for q in (50, 95, 99)}}
        for key, value in want.items():
            ctx.close(ctx.number(got.get(key), f"{key} ({n} requests)"), float(value), atol=1e-9, rtol=1e-9,
                      what=f"{key} ({n} requests)")
    for bad in (([0.0, 1.0], [1.0], [3, 4]), ([0.0, 2.0], [1.0, 1.5], [3, 4])):
        ctx.expect(ctx.run(probe_raises, "benchmark_summary", *bad) == "ValueError",
                   f"benchmark_summary{bad} should raise ValueError")


def probe_raises(sub, name, *args):
    try:
        getattr(sub, name)(*args)
    except ValueError:
        return "ValueError"
    except Exception as e:  # noqa: BLE001 -- the kind of error is the answer
        return type(e).__name__
    return "nothing"


# --- seeded bugs --------------------------------------------------------------------------------------
def rejection_resample_from_p(p, q, draft, u):
    n, dist = spec_decode.rejection_step(p, q, draft, u)
    return n, (p[n] if n < len(draft) else dist)  # resamples from p, not from the residual: biased


def rejection_ratio_inverted(p, q, draft, u):
    for i, x in enumerate(draft):  # accepts with q/p instead of p/q
        if p[i, x] > 0 and u[i] < min(1.0, float(q[i, x] / p[i, x])):
            continue
        residual = (p[i] - q[i]).clamp(min=0)
        return i, residual / residual.sum() if residual.sum() > 0 else p[i]
    return len(draft), p[len(draft)]


def rejection_bonus_off_by_one(p, q, draft, u):
    n, dist = spec_decode.rejection_step(p, q, draft, u)
    return n, (p[n - 1] if n == len(draft) else dist)  # the bonus token from the last drafted position


def int8_per_tensor(W):
    scale = W.abs().max().clamp(min=1e-12) / 127.0
    return torch.round(W / scale).clamp(-127, 127).to(torch.int8), scale.expand(W.shape[0]).clone()


def gptq_without_propagation(W, Hinv, scale, zero, bits):
    codes = quant.quantize_on_grid(W, scale[:, None], zero[:, None], bits)
    errors = (W - quant.dequantize_codes(codes, scale[:, None], zero[:, None])) / torch.diag(Hinv)[None, :]
    return codes, errors


def gptq_unscaled_error(W, Hinv, scale, zero, bits):
    W = W.clone()
    codes, errors = torch.zeros_like(W), torch.zeros_like(W)
    for i in range(W.shape[1]):
        q = quant.quantize_on_grid(W[:, i], scale, zero, bits)
        err = W[:, i] - quant.dequantize_codes(q, scale, zero)  # forgets to divide by Hinv[i, i]
        W[:, i:] -= err[:, None] * Hinv[i, i:][None, :]
        codes[:, i], errors[:, i] = q, err
    return codes, errors


def summary_mean_of_rates(starts, ends, tokens):
    """Throughput as the mean of per-request rates, and the nearest-rank p95."""
    s = benchmark_summary(starts, ends, tokens)
    lat = np.asarray(ends) - np.asarray(starts)
    s["tokens_per_s"] = float(np.mean(np.asarray(tokens) / lat))
    s["p95_latency_s"] = float(np.sort(lat)[min(len(lat) - 1, int(0.95 * len(lat)))])
    return s


LAB.bug("resample_from_p", rejection_step=rejection_resample_from_p)
LAB.bug("ratio_inverted", rejection_step=rejection_ratio_inverted)
LAB.bug("bonus_off_by_one", rejection_step=rejection_bonus_off_by_one)
LAB.bug("int8_per_tensor_scale", int8_absmax_quantize=int8_per_tensor)
LAB.bug("gptq_no_error_propagation", gptq_block_update=gptq_without_propagation)
LAB.bug("gptq_unscaled_error", gptq_block_update=gptq_unscaled_error)
LAB.bug("throughput_mean_of_rates", benchmark_summary=summary_mean_of_rates)


# --- deliverable --------------------------------------------------------------------------------------
def _train(vocab, d_model, n_layers, n_heads, steps, train_ids, val_ids, seed, context):
    from llmlab import transformer as T

    model = T.TransformerLM(T.TransformerConfig(vocab, context=context, d_model=d_model, n_layers=n_layers,
                                                n_heads=n_heads), seed=seed)
    hist = T.train(model, train_ids, val_ids, T.TrainConfig(steps=steps, eval_every=steps, eval_batches=10,
                                                            max_lr=3e-3, warmup=min(100, steps // 5)),
                   desc=f"m18 d={d_model}")
    return model, hist["val_loss"][-1]


def _bench(engine: eng.Engine, prompts: list[list[int]], concurrency: int, max_tokens: int) -> dict:
    """Closed-loop load: ``concurrency`` requests in flight; tokens/s and p95 request latency."""
    engine.max_batch = min(engine.max_batch, concurrency)
    params = eng.SamplingParams(max_tokens=max_tokens, temperature=0)
    queue, starts, ends, tokens, in_flight = list(prompts), [], [], [], []
    while queue or in_flight:
        while queue and len(in_flight) < concurrency:
            in_flight.append(engine.add(queue.pop(), params))
        for r in engine.step():
            starts.append(r.arrival)
            ends.append(time.perf_counter())
            tokens.append(len(r.output_ids))
            in_flight.remove(r)
    return benchmark_summary(starts, ends, tokens)


def run(profile: str, out: Path) -> tuple[dict, str]:
    from llmlab import transformer as T
    from llmlab.data import shakespeare
    from llmlab.tokenization import CharTokenizer

    big = profile == "full"
    train, val = shakespeare.split()
    tok = CharTokenizer.train(train + val)
    train_ids, val_ids = np.array(tok.encode(train)), np.array(tok.encode(val))
    context, steps = (256, 3000) if big else (64, 300)  # quick: the two models train in ~30 s on two cores
    target, target_loss = _train(tok.vocab_size, 256 if big else 96, 4 if big else 2, 8 if big else 4,
                                 steps, train_ids, val_ids, 0, context)
    draft, draft_loss = _train(tok.vocab_size, 64 if big else 32, 1, 2, steps, train_ids, val_ids, 1, context)
    size_ratio = target.n_params / draft.n_params
    gen = np.random.default_rng(0)
    prompts = [val_ids[s: s + 24].tolist() for s in gen.integers(0, len(val_ids) - 24, size=16 if big else 8)]
    new_tokens = 96 if big else 48

    # acceptance against k, measured against the closed form
    ks = [1, 2, 3, 4, 6, 8] if big else [1, 2, 4, 6]
    spec_rows = []
    for k in ks:
        e = eng.Engine(target, tok, max_batch=1, draft=draft, spec_tokens=k)
        t0 = time.perf_counter()
        e.generate(prompts, eng.SamplingParams(max_tokens=new_tokens, temperature=0))
        a = e.spec.per_token_acceptance
        spec_rows.append({"k": k, "acceptance": a, "acceptance_vllm": e.spec.acceptance_rate,
                          "tokens_per_step": e.spec.tokens_per_step,
                          "closed_form": spec_decode.expected_tokens_per_step(a, k),
                          "tokens_per_s": e.generation_tokens / (time.perf_counter() - t0)})
    with figure(out / "acceptance_vs_k.png", f"Speculative decoding (draft {size_ratio:.0f}x smaller)",
                ncols=2) as (a1, a2):
        a1.plot(ks, [r["acceptance"] for r in spec_rows], "o-", label="per-token acceptance a")
        a1.plot(ks, [r["tokens_per_step"] for r in spec_rows], "s-", label="tokens per step (measured)")
        a1.plot(ks, [r["closed_form"] for r in spec_rows], "k:", label="(1 - a^(k+1)) / (1 - a)")
        a1.set_xlabel("k (proposed tokens per step)")
        a1.legend()
        a2.plot(ks, [r["tokens_per_s"] for r in spec_rows], "o-")
        a2.set_xlabel("k")
        a2.set_ylabel("tokens/s, batch 1, greedy")

    # quantized variants: perplexity (validation characters) and speed
    calib = torch.from_numpy(train_ids[: context * 16].reshape(16, context))
    variants = {"fp32": target}
    for name, qc in (("int8", quant.QuantConfig("int8")), ("gptq-4bit", quant.QuantConfig("gptq", 4, 64)),
                     ("rtn-4bit", quant.QuantConfig("rtn", 4, 64)), ("gptq-3bit", quant.QuantConfig("gptq", 3, 64)),
                     ("rtn-3bit", quant.QuantConfig("rtn", 3, 64))):
        m = copy.deepcopy(target)
        quant.quantize_model(m, qc, calib)
        variants[name] = m
    ppl = {name: math.exp(T.evaluate(m, val_ids, 20, 32)) for name, m in variants.items()}

    # throughput and p95 latency against concurrency
    curves = {}
    for name, build in (("fp32", lambda: eng.Engine(target, tok, max_batch=8)),
                        ("fp32 + draft k=4", lambda: eng.Engine(target, tok, max_batch=8, draft=draft, spec_tokens=4)),
                        ("fp32 + n-gram k=4", lambda: eng.Engine(target, tok, max_batch=8, ngram=(3, 1),
                                                                 spec_tokens=4)),
                        ("gptq-4bit", lambda: eng.Engine(variants["gptq-4bit"], tok, max_batch=8))):
        curves[name] = {c: _bench(build(), prompts, c, new_tokens) for c in (1, 4, 8)}
    with figure(out / "throughput_latency.png", "Throughput and p95 latency against concurrency",
                ncols=2) as (a1, a2):
        for name, rows in curves.items():
            a1.plot(list(rows), [r["tokens_per_s"] for r in rows.values()], "o-", label=name)
            a2.plot(list(rows), [r["p95_latency_s"] for r in rows.values()], "o-", label=name)
        a1.set_xlabel("concurrent requests")
        a1.set_ylabel("generated tokens/s")
        a1.legend(fontsize=7)
        a2.set_xlabel("concurrent requests")
        a2.set_ylabel("p95 request latency (s)")
    metrics = {"target_params": target.n_params, "draft_params": draft.n_params, "size_ratio": size_ratio,
               "target_val_loss": target_loss, "draft_val_loss": draft_loss, "speculative": spec_rows,
               "perplexity": ppl, "throughput": curves}
    rows = "\n".join(f"| {r['k']} | {r['acceptance']:.3f} | {r['tokens_per_step']:.2f} | {r['closed_form']:.2f} | "
                     f"{r['tokens_per_s']:.0f} |" for r in spec_rows)
    report = f"""
Target: {target.n_params / 1e6:.2f}M parameters (validation loss {target_loss:.3f}); draft:
{draft.n_params / 1e3:.0f}k ({size_ratio:.0f}x smaller, loss {draft_loss:.3f}); Tiny Shakespeare characters.

## Speculative decoding (greedy, batch 1, {len(prompts)} prompts x {new_tokens} tokens)
| k | per-token acceptance a | tokens/step | (1 - a^(k+1)) / (1 - a) | tokens/s |
|---|---|---|---|---|
{rows}

The closed form assumes every proposal is accepted independently with the same probability; a drafted
run of easy tokens (spaces, common endings) breaks that, which is why measured tokens per step can differ.
Speculation pays off only when a target forward costs much more than a draft forward: with models this small
the per-call overhead dominates both (see the throughput figures below and `make bench`).

## Quantization (validation perplexity per character)
{", ".join(f"{k}: {v:.3f}" for k, v in ppl.items())}

## Throughput (tokens/s at concurrency 1 / 4 / 8)
{chr(10).join(f"- {k}: " + " / ".join(f"{r['tokens_per_s']:.0f}" for r in v.values()) for k, v in curves.items())}

![k](acceptance_vs_k.png)
![tput](throughput_latency.png)
"""
    return metrics, report
