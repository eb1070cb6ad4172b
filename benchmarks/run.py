"""`make bench`: every benchmark side by side with its baseline, in one run; results in
benchmarks/results/results.json."""

from __future__ import annotations

import datetime as dt
import json
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import autodiff_ffn  # noqa: E402
import inference_bench  # noqa: E402
import submit_latency  # noqa: E402
import tokenizers_bench  # noqa: E402


def main() -> None:
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    results = {"when": dt.datetime.now(dt.UTC).isoformat(), "machine": platform.platform(),
               "benchmarks": [autodiff_ffn.main(), submit_latency.main(), tokenizers_bench.main(),
                              inference_bench.main()]}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    ffn, lat, tok, inf = results["benchmarks"]
    print("autodiff: llmlab Tensor vs torch autograd, FFN forward+backward (float64, CPU)")
    for r in ffn["rows"]:
        print(f"  {r['shape']:<28} llmlab {r['llmlab_s'] * 1e3:8.1f} ms  torch {r['torch_s'] * 1e3:8.1f} ms  "
              f"ratio {r['ratio']:.2f}x")
    print("grading m01: `llmlab submit` (warm Ray head) vs `llmlab grade`, medians of 5")
    print(f"  grade {lat['grade_median_s']:.2f}s  submit {lat['submit_median_s']:.2f}s  ratio {lat['ratio']:.2f}x")
    tr, enc = tok["train"], tok["encode"]
    print(f"BPE on {tok['corpus_mb']:.1f} MB, vocab {tok['vocab']}: llmlab vs Hugging Face tokenizers (BpeTrainer) "
          "and tiktoken (same ranks)")
    print(f"  train   llmlab {tr['llmlab']['seconds']:.1f}s / {tr['llmlab']['peak_mb']:.0f} MB   "
          f"BpeTrainer {tr['hf_bpe_trainer']['seconds']:.1f}s / {tr['hf_bpe_trainer']['peak_mb']:.0f} MB   "
          f"time ratio {tr['time_ratio']:.2f}x, memory ratio {tr['memory_ratio']:.2f}x")
    print(f"  encode  llmlab {enc['llmlab_mb_s']:.1f} MB/s (cold cache {enc['llmlab_cold_mb_s']:.1f})   "
          f"tiktoken {enc['tiktoken_mb_s']:.1f} MB/s   ratio {enc['ratio_vs_tiktoken']:.2f}x   "
          f"same ids: {tok['same_ids']}")
    print(f"inference: llmlab engine, target {inf['target_params'] / 1e6:.1f}M / draft "
          f"{inf['draft_params'] / 1e3:.0f}k params, {inf['prompts']} prompts x {inf['new_tokens']} tokens, greedy")
    for batch, row in inf["decode"].items():
        print(f"  batch {batch}: llmlab {row['llmlab']['tokens_per_s']:.0f} tok/s (p95 {row['llmlab']['p95_s']:.2f}s)  "
              f"HF generate {row['hf_generate']['tokens_per_s']:.0f} tok/s (p95 {row['hf_generate']['p95_s']:.2f}s)  "
              f"ratio {row['ratio']:.2f}x")
    for name, row in inf["speculative"].items():
        extra = f"  speedup {row['speedup']:.2f}x, acceptance {row['acceptance']:.2f}" if "speedup" in row else ""
        print(f"  {name:<22} {row['tokens_per_s']:.0f} tok/s{extra}")
    for name, row in inf["quantized"].items():
        print(f"  {name:<10} {row['tokens_per_s']:.0f} tok/s  weights {row['weight_bytes'] / 1e6:.2f} MB  "
              f"val ppl {row['val_ppl']:.3f}")
    svc = inf["service"]
    print(f"  HTTP p95 {svc['http']['p95_s']:.2f}s vs in-process {svc['in_process']['p95_s']:.2f}s "
          f"({svc['p95_ratio']:.2f}x)")
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
