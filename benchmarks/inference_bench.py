"""llmlab's builtin engine against the baselines a user would pick instead, on the same trained models
(a character-level target and two much smaller drafts, trained here on Tiny Shakespeare for a few minutes
and kept under benchmarks/results/models/ for the next run):

- greedy decode throughput and p95 request latency at batch 1 and 8, llmlab eager and compiled
  (``Engine(compile=True)``, after its warm-up) vs Hugging Face ``generate`` (the same weights loaded as
  LlamaForCausalLM from llmlab's export), for 32 requests of 64 tokens each, and for output lengths that
  vary as they do in serving (heavy-tailed: exponential with mean 48, clipped to 4..128; 32 requests, and
  at batch 8 a stream of 128; ``generate`` runs each static batch until its longest request is done and
  only requested tokens count);
- speculative decoding (two draft models, each as trained and distilled on the target's greedy outputs;
  n-gram lookup) vs the same engine without it (eager and compiled), and vs HF assisted generation, at
  batch 1;
- INT8 and GPTQ 4-bit vs full precision: tokens/s, bytes of weights, validation perplexity;
- the HTTP service vs the engine in-process at the same load (p95 latency).
"""

from __future__ import annotations

import asyncio
import copy
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

NEW_TOKENS = 64
MODELS = Path(__file__).parent / "results" / "models"
# (name, d_model, layers, heads, training steps, peak learning rate)
SPECS = (("target", 512, 4, 8, 300, 1e-3), ("draft-64", 64, 1, 2, 300, 3e-3), ("draft-128", 128, 2, 4, 300, 3e-3))
DISTILL_STEPS = 1000


def _models():
    from llmlab import hf
    from llmlab import transformer as T
    from llmlab.data import shakespeare
    from llmlab.tokenization import CharTokenizer

    train, val = shakespeare.split()
    tok = CharTokenizer.train(train + val)
    tr, va = np.array(tok.encode(train)), np.array(tok.encode(val))
    out = {}
    for name, d, layers, heads, steps, lr in SPECS:
        folder = MODELS / f"{name}-d{d}-l{layers}-s{steps}"
        if (folder / "config.json").exists():
            out[name] = hf.load(folder).eval()
            continue
        m = T.TransformerLM(T.TransformerConfig(tok.vocab_size, context=192, d_model=d, n_layers=layers,
                                                n_heads=heads), seed=len(out))
        T.train(m, tr, va, T.TrainConfig(steps=steps, batch_size=16, eval_every=steps, eval_batches=5, warmup=30,
                                         max_lr=lr, min_lr=lr / 10), desc=f"bench model {name}")
        hf.export(m, folder, tok)
        out[name] = m.eval()
    for name in ("draft-64", "draft-128"):
        folder = MODELS / f"{name}-distilled-s{DISTILL_STEPS}"
        if (folder / "config.json").exists():
            out[f"{name}-distilled"] = hf.load(folder).eval()
            continue
        m = copy.deepcopy(out[name])
        _distill(m, out["target"], tr, name)
        hf.export(m, folder, tok)
        out[f"{name}-distilled"] = m.eval()
    return tok, out, va


def _distill(draft, target, train_tokens, name: str) -> None:
    """Fine-tune a draft on the target's greedy continuations of 512 training-split prompts (on-policy
    distillation: llmlab.inference.distill)."""
    from llmlab import transformer as T
    from llmlab.inference.distill import distill_draft

    starts = np.random.default_rng(2).integers(0, len(train_tokens) - 32, size=512)
    prompts = [train_tokens[s: s + 32].tolist() for s in starts]
    distill_draft(draft, target, prompts, 128, T.TrainConfig(steps=DISTILL_STEPS, batch_size=16,
                                                             eval_every=DISTILL_STEPS, eval_batches=5, warmup=20,
                                                             max_lr=1e-3, min_lr=1e-4), desc=f"distil {name}")


def _prompts(va, n: int, length: int = 32) -> list[list[int]]:
    starts = np.random.default_rng(0).integers(0, len(va) - length, size=n)
    return [va[s: s + length].tolist() for s in starts]


def _lengths(n: int, mixed: bool) -> list[int]:
    if not mixed:
        return [NEW_TOKENS] * n
    draws = np.random.default_rng(1).exponential(48, size=n)
    return [int(x) for x in np.clip(np.round(draws), 4, 128)]


def _engine_run(engine, prompts, batch: int, lengths: list[int] | None = None) -> dict:
    from llmlab.inference import SamplingParams

    lengths = lengths or [NEW_TOKENS] * len(prompts)
    engine.max_batch = batch  # requests beyond it wait: all arrive at t0
    t0 = time.perf_counter()
    reqs = [engine.add(p, SamplingParams(max_tokens=n, temperature=0)) for p, n in zip(prompts, lengths, strict=True)]
    while engine.has_work():
        engine.step()
    seconds = time.perf_counter() - t0
    lat = [r.token_times[-1] - r.arrival for r in reqs]
    return {"tokens_per_s": sum(len(r.output_ids) for r in reqs) / seconds, "p95_s": float(np.percentile(lat, 95))}


def _hf_run(hf_model, prompts, batch: int, assistant=None, lengths: list[int] | None = None) -> dict:
    """All prompts arrive at t0 (as in _engine_run), in static batches of ``batch`` in arrival order; each
    batch generates until its longest request is done, and a request's latency ends with its batch. Only
    the tokens each request asked for count."""
    lengths = lengths or [NEW_TOKENS] * len(prompts)
    lat, tokens, t0 = [], 0, time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(prompts), batch):
            ids = torch.tensor(prompts[i: i + batch])
            longest = max(lengths[i: i + batch])
            out = hf_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=longest,
                                    min_new_tokens=longest, do_sample=False, pad_token_id=0,
                                    assistant_model=assistant)
            assert out.shape[1] - ids.shape[1] == longest
            lat += [time.perf_counter() - t0] * len(ids)
            tokens += sum(lengths[i: i + batch])
    return {"tokens_per_s": tokens / (time.perf_counter() - t0), "p95_s": float(np.percentile(lat, 95))}


def _weight_bytes(model, bits: int | None) -> int:
    from llmlab.inference.quant import LINEARS

    n_linear = sum(getattr(b, name).numel() for b in model.blocks for name in LINEARS)
    rest = model.n_params - n_linear
    return rest * 4 + (n_linear * 4 if bits is None else math.ceil(n_linear * bits / 8))


def _closed_loop(engine, prompts, concurrency: int) -> dict:
    """The engine in-process under the HTTP test's load: ``concurrency`` requests in flight, the next one
    added as one finishes; a request's latency runs from its add to its last token."""
    from llmlab.inference import SamplingParams

    params = SamplingParams(max_tokens=NEW_TOKENS, temperature=0)
    pending, lat, tokens = list(prompts), [], 0
    t0 = time.perf_counter()
    for _ in range(min(concurrency, len(pending))):
        engine.add(pending.pop(0), params)
    while engine.has_work():
        for r in engine.step():
            lat.append(r.token_times[-1] - r.arrival)
            tokens += len(r.output_ids)
            if pending:
                engine.add(pending.pop(0), params)
    return {"tokens_per_s": tokens / (time.perf_counter() - t0), "p95_s": float(np.percentile(lat, 95))}


def _service_vs_engine(folder: Path, prompts, concurrency: int = 4) -> dict:
    import httpx

    from llmlab.inference import Engine

    inproc = _closed_loop(Engine.from_folder(folder, max_batch=concurrency), prompts, concurrency)
    port = 18000 + os.getpid() % 1000
    proc = subprocess.Popen([str(Path(sys.executable).with_name("llmlab")), "serve", "inference", "--model",
                             str(folder), "--port", str(port), "--max-batch", str(concurrency)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)

        async def load():
            sem, lat = asyncio.Semaphore(concurrency), []
            async with httpx.AsyncClient(base_url=base, timeout=120) as c:
                async def one(p):
                    async with sem:
                        s = time.perf_counter()
                        r = await c.post("/v1/completions", json={"model": folder.name, "prompt": p,
                                                                   "max_tokens": NEW_TOKENS, "temperature": 0})
                        r.raise_for_status()
                        lat.append(time.perf_counter() - s)
                t0 = time.perf_counter()
                await asyncio.gather(*(one(p) for p in prompts))
                return lat, time.perf_counter() - t0

        lat, seconds = asyncio.run(load())
    finally:
        proc.kill()
        proc.wait()
    http = {"tokens_per_s": len(prompts) * NEW_TOKENS / seconds, "p95_s": float(np.percentile(lat, 95))}
    return {"in_process": inproc, "http": http, "p95_ratio": http["p95_s"] / inproc["p95_s"]}


def main() -> dict:
    from transformers import AutoModelForCausalLM

    from llmlab import hf
    from llmlab import transformer as T
    from llmlab.inference import Engine, quant

    tok, models, va = _models()
    target = models["target"]
    prompts = _prompts(va, 32)
    with tempfile.TemporaryDirectory(prefix="llmlab-bench-") as d:
        folders = {name: hf.export(m, Path(d) / name, tok) for name, m in models.items()}
        hf_models = {name: AutoModelForCausalLM.from_pretrained(f, dtype=torch.float32).eval()
                     for name, f in folders.items()}
        compiled = {}  # one warmed-up compiled engine per configuration; its graphs serve later engines too
        for name, kw in (("plain", {}), ("draft-64-distilled k=4", {"draft": models["draft-64-distilled"],
                                                                    "spec_tokens": 4}),
                         ("draft-64-distilled k=8", {"draft": models["draft-64-distilled"], "spec_tokens": 8})):
            compiled[name] = Engine(target, tok, compile=True, **kw).warm_up()
        decode = {}
        # equal: 32 requests of 64 tokens; mixed: heavy-tailed lengths, 32 requests, and a stream of 128, long
        # enough that the batch is full for most of the run (as on a loaded server) rather than draining
        for workload, n in (("equal", 32), ("mixed", 32), ("mixed", 128)):
            reqs, lengths = _prompts(va, n), _lengths(n, workload == "mixed")
            for batch in (1, 8):
                if n == 128 and batch == 1:  # batch 1 does not depend on how many requests there are
                    continue
                ours = _engine_run(Engine(target, tok), reqs, batch, lengths)
                fast = _engine_run(Engine(target, tok, compile=True), reqs, batch, lengths)
                theirs = _hf_run(hf_models["target"], reqs, batch, lengths=lengths)
                decode[f"{workload} x{n} batch {batch}"] = {
                    "requests": n, "llmlab": ours, "llmlab_compiled": fast, "hf_generate": theirs,
                    "ratio": ours["tokens_per_s"] / theirs["tokens_per_s"],
                    "ratio_compiled": fast["tokens_per_s"] / theirs["tokens_per_s"]}
        few = prompts[:12]

        def paired(compile: bool = False, **kw) -> dict:
            """A variant against plain decoding, run in alternation 3 times (A B A B A B), so both see the
            same state of this machine (its speed drifts by 10-30% between minutes); the speedup is the
            median of the 3 pair ratios, the figures those of the median pair."""
            pairs = []
            for _ in range(3):
                base = _engine_run(Engine(target, tok, compile=compile), few, 1)
                e = Engine(target, tok, compile=compile, **kw)
                run = _engine_run(e, few, 1)
                pairs.append((run["tokens_per_s"] / base["tokens_per_s"], run, base, e))
            ratio, run, base, e = sorted(pairs, key=lambda x: x[0])[1]
            return {**run, "plain_tokens_per_s": base["tokens_per_s"], "speedup": ratio,
                    "acceptance": e.spec.acceptance_rate, "per_token_acceptance": e.spec.per_token_acceptance,
                    "tokens_per_step": e.spec.tokens_per_step}

        spec = {"plain": _engine_run(Engine(target, tok), few, 1)}
        drafts = ("draft-64", "draft-128", "draft-64-distilled", "draft-128-distilled")
        variants = [(f"{name} k={k}", {"draft": models[name], "spec_tokens": k}) for name in drafts for k in (2, 4)]
        variants += [("draft-64-distilled k=8", {"draft": models["draft-64-distilled"], "spec_tokens": 8}),
                     ("n-gram k=4", {"ngram": (3, 1), "spec_tokens": 4})]
        variants += [(f"compiled: {name}", {**kw, "compile": True}) for name, kw in variants
                     if name.startswith("draft-64-distilled k=") and name != "draft-64-distilled k=2"]
        for name, kw in variants:
            spec[name] = paired(**kw)
        for name in ("draft-64", "draft-64-distilled"):
            spec[f"hf assisted ({name})"] = _hf_run(hf_models["target"], few[:6], 1, assistant=hf_models[name])
        spec["hf generate"] = _hf_run(hf_models["target"], few[:6], 1)
        service = _service_vs_engine(folders["target"], prompts[:16])
    calib = torch.from_numpy(np.asarray(tok.encode("".join(tok.decode(p) for p in prompts)))[:512].reshape(4, 128))
    quantized = {}
    for name, qc, bits in (("fp32", None, None), ("int8", quant.QuantConfig("int8"), 8),
                           ("gptq-4bit", quant.QuantConfig("gptq", 4, 64), 4)):
        m = copy.deepcopy(target)
        if qc:
            quant.quantize_model(m, qc, calib)
        quantized[name] = {**_engine_run(Engine(m, tok), prompts[:16], 8), "weight_bytes": _weight_bytes(m, bits),
                           "val_ppl": math.exp(T.evaluate(m, va, 20, 16))}
    return {"name": "inference", "params": {n: m.n_params for n, m in models.items()},
            "new_tokens": NEW_TOKENS, "prompts": len(prompts), "compile_warm_up_s": compiled, "decode": decode,
            "speculative": spec,
            "quantized": quantized, "service": service}


def report(inf: dict) -> None:
    params = ", ".join(f"{n} {p / 1e6:.2f}M" for n, p in inf["params"].items())
    print(f"inference: llmlab engine ({params} params), {inf['prompts']} prompts, greedy")
    warm = ", ".join(f"{name} {s:.0f}s" for name, s in inf["compile_warm_up_s"].items())
    print(f"  torch.compile warm-up: {warm}")
    for key, row in inf["decode"].items():
        ours, fast, hf = row["llmlab"], row["llmlab_compiled"], row["hf_generate"]
        print(f"  {key:<20} llmlab {ours['tokens_per_s']:.0f} tok/s "
              f"(p95 {ours['p95_s']:.2f}s), compiled {fast['tokens_per_s']:.0f} (p95 {fast['p95_s']:.2f}s)  "
              f"HF generate {hf['tokens_per_s']:.0f} tok/s (p95 {hf['p95_s']:.2f}s)  "
              f"ratio {row['ratio']:.2f}x, compiled {row['ratio_compiled']:.2f}x")
    for name, row in inf["speculative"].items():
        extra = (f"  speedup {row['speedup']:.2f}x, acceptance {row['acceptance']:.2f}, "
                 f"{row['tokens_per_step']:.2f} tokens/step") if "speedup" in row else ""
        print(f"  {name:<36} {row['tokens_per_s']:.0f} tok/s{extra}")
    for name, row in inf["quantized"].items():
        print(f"  {name:<10} {row['tokens_per_s']:.0f} tok/s  weights {row['weight_bytes'] / 1e6:.2f} MB  "
              f"val ppl {row['val_ppl']:.3f}")
    svc = inf["service"]
    print(f"  HTTP p95 {svc['http']['p95_s']:.2f}s vs in-process {svc['in_process']['p95_s']:.2f}s "
          f"({svc['p95_ratio']:.2f}x)")


if __name__ == "__main__":
    import json

    result = main()
    print(json.dumps(result, indent=2))
    report(result)
