"""Training throughput of llmlab's TransformerLM with attention written out (``attn_implementation="eager"``,
lab m09's arithmetic) against torch's fused ``scaled_dot_product_attention`` kernel (``"sdpa"``, the default),
on the shapes the labs train: one forward + backward + AdamW step on random tokens, one thread (as `make run`
gives each job), float32. Tokens/s and the ratio sdpa / eager.

    python benchmarks/attention_bench.py
"""

from __future__ import annotations

import time

import torch

from llmlab.transformer import TransformerConfig, TransformerLM, cross_entropy

# (label, batch, context, d_model, layers, heads)
SHAPES = (("m19's char LM", 16, 128, 96, 2, 4), ("m20's TinyStories LM", 8, 128, 128, 4, 4),
          ("context 512", 4, 512, 128, 2, 4))
STEPS = 6  # timed, after two untimed


def _tokens_per_s(impl: str, batch: int, context: int, d: int, layers: int, heads: int) -> float:
    cfg = TransformerConfig(256, context=context, d_model=d, n_layers=layers, n_heads=heads, attn_implementation=impl)
    model = TransformerLM(cfg, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, 256, (batch, context + 1), generator=torch.Generator().manual_seed(0))
    t0 = 0.0
    for step in range(STEPS + 2):
        if step == 2:
            t0 = time.perf_counter()
        loss = cross_entropy(model(x[:, :-1]), x[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return STEPS * batch * context / (time.perf_counter() - t0)


def main() -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = []
        for label, *shape in SHAPES:
            eager, sdpa = (_tokens_per_s(impl, *shape) for impl in ("eager", "sdpa"))
            rows.append({"shape": label, "batch": shape[0], "context": shape[1], "d_model": shape[2],
                         "layers": shape[3], "eager_tokens_s": eager, "sdpa_tokens_s": sdpa, "ratio": sdpa / eager})
    finally:
        torch.set_num_threads(threads)
    return {"name": "attention", "threads": 1, "rows": rows}


def report(r: dict) -> None:
    print("TransformerLM training step: fused sdpa vs eager attention (float32, one thread)")
    for row in r["rows"]:
        print(f"  {row['shape']:<22} B{row['batch']} T{row['context']} d{row['d_model']} L{row['layers']}  "
              f"eager {row['eager_tokens_s']:8.0f} tok/s  sdpa {row['sdpa_tokens_s']:8.0f} tok/s  "
              f"ratio {row['ratio']:.2f}x")


if __name__ == "__main__":
    report(main())
