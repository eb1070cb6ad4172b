"""Two choices in the labs' training steps, each against what a user would write instead, one thread (as
`make run` gives each job), float32, the median of 30 steps after 2 untimed:

- RLHF (lab m13) applies the vocabulary's head only at the positions that predict the reply
  (``logits_at``), and its reward model reads the trunk without the head: against computing every position's
  logits and slicing afterwards. m13's policy: 2,007 words, d_model 64, 2 layers, 64 sequences of 26 tokens of
  which 16 are the reply.
- Lottery tickets (lab m15) train LeNet-300-100 (950k weights, 60 images a step) with torch's fused Adam
  kernel: against ``torch.optim.Adam``'s default on CPU, a loop over the tensors.

    python benchmarks/step_bench.py
"""

from __future__ import annotations

import torch

from llmlab.distributed.throughput import median_seconds, torch_threads

STEPS = 30


def _rlhf_rows() -> list[dict]:
    from llmlab.rlhf import models
    from llmlab.transformer import TransformerConfig, TransformerLM

    lm = TransformerLM(TransformerConfig(2007, context=32, d_model=64, n_layers=2, n_heads=4), seed=0)
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-3)
    ids, prompt = torch.randint(0, 2007, (64, 26), generator=torch.Generator().manual_seed(0)), 10
    rm = models.RewardModel(lm)

    def sft(logprobs):
        def step():
            loss = -logprobs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    def every_position():
        logp = torch.log_softmax(lm(ids)[:, prompt - 1:-1].float(), -1)
        return logp.gather(-1, ids[:, prompt:, None]).squeeze(-1)

    def reward(hidden):
        def step():
            rm.zero_grad(set_to_none=True)
            hidden().mean().backward()
        return step

    rows = []
    for label, baseline, ours in (
            ("m13 SFT step (policy)", sft(every_position), sft(lambda: models.reply_logprobs(lm, ids, prompt))),
            ("m13 reward model forward+backward",
             reward(lambda: rm.lm.final_norm(rm.lm(ids, return_residuals=True)[1][-1])),
             reward(lambda: rm.lm.final_norm(rm.lm.trunk(ids)[-1])))):
        b, o = median_seconds(baseline, STEPS), median_seconds(ours, STEPS)
        rows.append({"step": label, "baseline": "logits at every position", "llmlab": "head where it is read",
                     "baseline_ms": 1e3 * b, "llmlab_ms": 1e3 * o, "ratio": b / o})
    return rows


def _lottery_row() -> dict:
    from llmlab.representation.lottery import MLP

    x, y = torch.randn(60, 3072, generator=torch.Generator().manual_seed(0)), torch.randint(0, 10, (60,))

    def step_of(**adam):
        model = MLP(seed=0)
        opt = torch.optim.Adam(model.parameters(), lr=1.2e-3, **adam)

        def step():
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    b, o = median_seconds(step_of(), STEPS), median_seconds(step_of(fused=True), STEPS)
    return {"step": "m15 LeNet-300-100 step", "baseline": "torch Adam (per-tensor loop)", "llmlab": "fused Adam",
            "baseline_ms": 1e3 * b, "llmlab_ms": 1e3 * o, "ratio": b / o}


def main() -> dict:
    with torch_threads(1):
        return {"name": "training steps", "threads": 1, "rows": [*_rlhf_rows(), _lottery_row()]}


def report(r: dict) -> None:
    print("training steps: the labs' choices against the usual way (float32, one thread, median of 30 steps)")
    for row in r["rows"]:
        print(f"  {row['step']:<36} {row['baseline']} {row['baseline_ms']:7.1f} ms   {row['llmlab']} "
              f"{row['llmlab_ms']:7.1f} ms   ratio {row['ratio']:.2f}x")


if __name__ == "__main__":
    report(main())
