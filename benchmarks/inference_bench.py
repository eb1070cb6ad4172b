"""llmlab's builtin engine against the baselines a user would pick instead, on the same trained models
(a character-level target and a much smaller draft, trained here on Tiny Shakespeare for a few minutes):

- greedy decode throughput and p95 request latency at batch 1 and 8 vs Hugging Face ``generate`` (the same
  weights loaded as LlamaForCausalLM from llmlab's export);
- speculative decoding (draft model, n-gram lookup) vs the same engine without it, and vs HF assisted
  generation at batch 1;
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


def _models(steps: int = 250):
    from llmlab import transformer as T
    from llmlab.data import shakespeare
    from llmlab.tokenization import CharTokenizer

    train, val = shakespeare.split()
    tok = CharTokenizer.train(train + val)
    tr, va = np.array(tok.encode(train)), np.array(tok.encode(val))
    out = []
    for d, layers, heads, seed in ((256, 4, 8, 0), (64, 1, 2, 1)):
        m = T.TransformerLM(T.TransformerConfig(tok.vocab_size, context=160, d_model=d, n_layers=layers,
                                                n_heads=heads), seed=seed)
        T.train(m, tr, va, T.TrainConfig(steps=steps, eval_every=steps, eval_batches=5, warmup=50),
                desc=f"bench model d={d}")
        out.append(m.eval())
    return tok, out[0], out[1], va


def _prompts(va, n: int, length: int = 32) -> list[list[int]]:
    starts = np.random.default_rng(0).integers(0, len(va) - length, size=n)
    return [va[s: s + length].tolist() for s in starts]


def _engine_run(engine, prompts, batch: int) -> dict:
    from llmlab.inference import SamplingParams

    engine.max_batch = batch  # requests beyond it wait: all arrive at t0
    params = SamplingParams(max_tokens=NEW_TOKENS, temperature=0)
    t0 = time.perf_counter()
    reqs = [engine.add(p, params) for p in prompts]
    while engine.has_work():
        engine.step()
    seconds = time.perf_counter() - t0
    lat = [r.token_times[-1] - r.arrival for r in reqs]
    return {"tokens_per_s": sum(len(r.output_ids) for r in reqs) / seconds, "p95_s": float(np.percentile(lat, 95))}


def _hf_run(hf_model, prompts, batch: int, assistant=None) -> dict:
    """All prompts arrive at t0 (as in _engine_run); a request's latency ends when its batch is done."""
    lat, tokens, t0 = [], 0, time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(prompts), batch):
            ids = torch.tensor(prompts[i: i + batch])
            out = hf_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                                    min_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0,
                                    assistant_model=assistant)
            lat += [time.perf_counter() - t0] * len(ids)
            tokens += (out.shape[1] - ids.shape[1]) * len(ids)
    return {"tokens_per_s": tokens / (time.perf_counter() - t0), "p95_s": float(np.percentile(lat, 95))}


def _weight_bytes(model, bits: int | None) -> int:
    from llmlab.inference.quant import LINEARS

    n_linear = sum(getattr(b, name).numel() for b in model.blocks for name in LINEARS)
    rest = model.n_params - n_linear
    return rest * 4 + (n_linear * 4 if bits is None else math.ceil(n_linear * bits / 8))


def _service_vs_engine(folder: Path, prompts, concurrency: int = 4) -> dict:
    import httpx

    from llmlab.inference import Engine

    inproc = _engine_run(Engine.from_folder(folder), prompts, concurrency)
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

    tok, target, draft, va = _models()
    prompts = _prompts(va, 16)
    with tempfile.TemporaryDirectory(prefix="llmlab-bench-") as d:
        tf, df = hf.export(target, Path(d) / "target", tok), hf.export(draft, Path(d) / "draft", tok)
        hf_target = AutoModelForCausalLM.from_pretrained(tf, dtype=torch.float32).eval()
        hf_draft = AutoModelForCausalLM.from_pretrained(df, dtype=torch.float32).eval()
        decode = {}
        for batch in (1, 8):
            ours = _engine_run(Engine(target, tok), prompts, batch)
            theirs = _hf_run(hf_target, prompts, batch)
            decode[batch] = {"llmlab": ours, "hf_generate": theirs,
                             "ratio": ours["tokens_per_s"] / theirs["tokens_per_s"]}
        spec = {"plain": _engine_run(Engine(target, tok), prompts, 1)}
        for name, kw in (("draft k=4", {"draft": draft, "spec_tokens": 4}), ("n-gram k=4", {"ngram": (3, 1),
                                                                                            "spec_tokens": 4})):
            e = Engine(target, tok, **kw)
            spec[name] = {**_engine_run(e, prompts, 1), "acceptance": e.spec.acceptance_rate,
                          "per_token_acceptance": e.spec.per_token_acceptance,
                          "tokens_per_step": e.spec.tokens_per_step}
            spec[name]["speedup"] = spec[name]["tokens_per_s"] / spec["plain"]["tokens_per_s"]
        spec["hf assisted (draft)"] = _hf_run(hf_target, prompts[:8], 1, assistant=hf_draft)
        service = _service_vs_engine(tf, prompts)
    calib = torch.from_numpy(np.asarray(tok.encode("".join(tok.decode(p) for p in prompts)))[:512].reshape(4, 128))
    quantized = {}
    for name, qc, bits in (("fp32", None, None), ("int8", quant.QuantConfig("int8"), 8),
                           ("gptq-4bit", quant.QuantConfig("gptq", 4, 64), 4)):
        m = copy.deepcopy(target)
        if qc:
            quant.quantize_model(m, qc, calib)
        quantized[name] = {**_engine_run(Engine(m, tok), prompts, 8), "weight_bytes": _weight_bytes(m, bits),
                           "val_ppl": math.exp(T.evaluate(m, va, 20, 16))}
    return {"name": "inference", "target_params": target.n_params, "draft_params": draft.n_params,
            "new_tokens": NEW_TOKENS, "prompts": len(prompts), "decode": decode, "speculative": spec,
            "quantized": quantized, "service": service}


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2))
