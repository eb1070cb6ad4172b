"""Training throughput of llmlab's TransformerLM with attention written out (``attn_implementation="eager"``,
lab m09's arithmetic) against torch's fused ``scaled_dot_product_attention`` kernel (``"sdpa"``, the default),
on the shapes the labs train: one forward + backward + AdamW step on random tokens, one thread (as `make run`
gives each job), float32. Tokens/s (from the median step) and the ratio sdpa / eager.

    python benchmarks/attention_bench.py
"""

from __future__ import annotations

import torch
from step_bench import median_seconds, on_one_thread

from llmlab.transformer import TransformerConfig, TransformerLM, cross_entropy

# (label, vocabulary, batch, context, d_model, layers, heads): m19's Tiny Shakespeare characters, m20's BPE
SHAPES = (("m19's char LM", 65, 16, 128, 96, 2, 4), ("m20's TinyStories LM", 2048, 8, 128, 128, 4, 4),
          ("context 512", 256, 4, 512, 128, 2, 4))


def _tokens_per_s(impl: str, vocab: int, batch: int, context: int, d: int, layers: int, heads: int) -> float:
    cfg = TransformerConfig(vocab, context=context, d_model=d, n_layers=layers, n_heads=heads, attn_implementation=impl)
    model = TransformerLM(cfg, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, vocab, (batch, context + 1), generator=torch.Generator().manual_seed(0))

    def step():
        loss = cross_entropy(model(x[:, :-1]), x[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return batch * context / median_seconds(step, steps=12)


def main() -> dict:
    def rows():
        out = []
        for label, *shape in SHAPES:
            eager, sdpa = (_tokens_per_s(impl, *shape) for impl in ("eager", "sdpa"))
            out.append({"shape": label, "vocab": shape[0], "batch": shape[1], "context": shape[2], "d_model": shape[3],
                        "layers": shape[4], "eager_tokens_s": eager, "sdpa_tokens_s": sdpa, "ratio": sdpa / eager})
        return out

    return {"name": "attention", "threads": 1, "rows": on_one_thread(rows)}


def report(r: dict) -> None:
    print("TransformerLM training step: fused sdpa vs eager attention (float32, one thread)")
    for row in r["rows"]:
        print(f"  {row['shape']:<22} V{row['vocab']} B{row['batch']} T{row['context']} d{row['d_model']} "
              f"L{row['layers']}  eager {row['eager_tokens_s']:8.0f} tok/s  sdpa {row['sdpa_tokens_s']:8.0f} tok/s  "
              f"ratio {row['ratio']:.2f}x")


if __name__ == "__main__":
    report(main())
