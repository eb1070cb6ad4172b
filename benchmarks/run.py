"""`make bench`: every benchmark side by side with its baseline, in one run; results in
benchmarks/results/results.json."""

from __future__ import annotations

import datetime as dt
import json
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import attention_bench  # noqa: E402
import autodiff_ffn  # noqa: E402
import inference_bench  # noqa: E402
import isolation_bench  # noqa: E402
import pipeline_bench  # noqa: E402
import pretrain_bench  # noqa: E402
import retrieval_bench  # noqa: E402
import step_bench  # noqa: E402
import submit_latency  # noqa: E402
import tokenizers_bench  # noqa: E402


def main() -> None:
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    results = {"when": dt.datetime.now(dt.UTC).isoformat(), "machine": platform.platform(),
               "benchmarks": [autodiff_ffn.main(), submit_latency.main(), tokenizers_bench.main(),
                              inference_bench.main(), isolation_bench.main(),
                              pretrain_bench.main(), pipeline_bench.main(), retrieval_bench.main(),
                              attention_bench.main(), step_bench.main()]}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    ffn, lat, tok, inf, iso, pre, pipe, ret, att, step = results["benchmarks"]
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
    inference_bench.report(inf)
    isolation_bench.report(iso)
    pretrain_bench.report(pre)
    pipeline_bench.report(pipe)
    retrieval_bench.report(ret)
    attention_bench.report(att)
    step_bench.report(step)
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
