"""Decode throughput of llmlab's engine against Hugging Face ``generate`` on one device (run it on a GPU
node: ``python benchmarks/inference_device.py --device cuda``). The model is Llama-shaped with random
weights (tokens/s does not depend on the values): greedy, 16 prompts of 32 tokens, 64 new tokens each, all
arriving at once, at batch 1 and 8, in float32 and bfloat16, llmlab eager and (with ``--compile``) with
``Engine(compile=True)`` after its warm-up. One run; ratios are llmlab / HF.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from llmlab import hf
from llmlab.inference import Engine, SamplingParams
from llmlab.transformer import TransformerConfig, TransformerLM

NEW, PROMPTS, PROMPT_LEN = 64, 16, 32


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _ours(model, prompts, batch: int, device: str, compile: bool = False) -> float:
    engine = Engine(model, max_batch=batch, compile=compile)
    engine.warm_up()
    engine.generate(prompts[:batch], SamplingParams(max_tokens=4, temperature=0))  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    reqs = engine.generate(prompts, SamplingParams(max_tokens=NEW, temperature=0))
    _sync(device)
    return sum(len(r.output_ids) for r in reqs) / (time.perf_counter() - t0)


def _theirs(model, prompts, batch: int, device: str) -> float:
    def run(ps, n):
        for i in range(0, len(ps), batch):
            ids = torch.tensor(ps[i: i + batch], device=device)
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, pad_token_id=0)

    with torch.no_grad():
        run(prompts[:batch], 4)
        _sync(device)
        t0 = time.perf_counter()
        run(prompts, NEW)
        _sync(device)
    return len(prompts) * NEW / (time.perf_counter() - t0)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--d-model", type=int, default=1024)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--compile", action="store_true", help="also llmlab's engine through torch.compile")
    args = p.parse_args(argv)
    from transformers import AutoModelForCausalLM

    cfg = TransformerConfig(args.vocab, context=256, d_model=args.d_model, n_layers=args.layers,
                            n_heads=args.d_model // 64)
    base = TransformerLM(cfg, seed=0)
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, args.vocab, (PROMPT_LEN,), generator=gen).tolist() for _ in range(PROMPTS)]
    out = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
           "params": base.n_params, "results": {}}
    with tempfile.TemporaryDirectory() as d:
        folder = hf.export(base, Path(d) / "m")
        for dtype in [getattr(torch, name) for name in args.dtypes.split(",")]:
            ours_model = hf.load(folder, dtype).to(args.device).eval()
            theirs_model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(args.device).eval()
            for batch in (1, 8):
                a = _ours(ours_model, prompts, batch, args.device)
                b = _theirs(theirs_model, prompts, batch, args.device)
                key = f"{str(dtype).removeprefix('torch.')} batch {batch}"
                out["results"][key] = {"llmlab_tok_s": round(a, 1), "hf_generate_tok_s": round(b, 1),
                                       "ratio": round(a / b, 2)}
                if args.compile:
                    c = _ours(ours_model, prompts, batch, args.device, compile=True)
                    out["results"][key] |= {"llmlab_compiled_tok_s": round(c, 1), "ratio_compiled": round(c / b, 2)}
                print(key, out["results"][key], flush=True)
            del ours_model, theirs_model
    return out


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
