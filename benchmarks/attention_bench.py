"""Training throughput of llmlab's TransformerLM with attention written out (``attn_implementation="eager"``,
lab m09's arithmetic) against torch's fused ``scaled_dot_product_attention`` kernel (``"sdpa"``, the default),
on the shapes the labs train: one forward + backward + AdamW step on random tokens, one thread (as `make run`
gives each job), float32. Tokens/s (from the median step) and the ratio sdpa / eager.

    python benchmarks/attention_bench.py
"""

from __future__ import annotations

from llmlab.distributed.throughput import step_tokens_per_s
from llmlab.transformer import TransformerConfig

# (label, vocabulary, batch, context, d_model, layers, heads): m19's Tiny Shakespeare characters, m20's BPE
SHAPES = (("m19's char LM", 65, 16, 128, 96, 2, 4), ("m20's TinyStories LM", 2048, 8, 128, 128, 4, 4),
          ("context 512", 256, 4, 512, 128, 2, 4))


def main() -> dict:
    rows = []
    for label, vocab, batch, context, d, layers, heads in SHAPES:
        eager, sdpa = (step_tokens_per_s(TransformerConfig(vocab, context=context, d_model=d, n_layers=layers,
                                                           n_heads=heads, attn_implementation=impl), batch)
                       for impl in ("eager", "sdpa"))
        rows.append({"shape": label, "vocab": vocab, "batch": batch, "context": context, "d_model": d,
                     "layers": layers, "eager_tokens_s": eager, "sdpa_tokens_s": sdpa, "ratio": sdpa / eager})
    return {"name": "attention", "threads": 1, "rows": rows}


def report(r: dict) -> None:
    print("TransformerLM training step: fused sdpa vs eager attention (float32, one thread)")
    for row in r["rows"]:
        print(f"  {row['shape']:<22} V{row['vocab']} B{row['batch']} T{row['context']} d{row['d_model']} "
              f"L{row['layers']}  eager {row['eager_tokens_s']:8.0f} tok/s  sdpa {row['sdpa_tokens_s']:8.0f} tok/s  "
              f"ratio {row['ratio']:.2f}x")


if __name__ == "__main__":
    report(main())
