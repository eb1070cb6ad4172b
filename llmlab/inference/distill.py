"""Distilling a draft model for speculative decoding.

Speculation pays only when the target accepts most proposals, and a small draft trained on the same text
as the target disagrees with it often (in llmlab's benchmark, a 60k-parameter draft accepted 57% of its
greedy proposals against a 12.7M target). On-policy distillation (DistillSpec, Zhou et al. 2023) trains the
draft on what the target itself generates, which is what acceptance measures: the same draft then accepted
91%, and greedy decoding went from 1.1-1.2x to 1.76-1.83x faster than the target alone.
"""

from __future__ import annotations

import numpy as np

from llmlab import transformer as T
from llmlab.inference.engine import Engine, SamplingParams


def distill_draft(draft: T.TransformerLM, target, prompts: list[list[int]], max_tokens: int = 128,
                  cfg: T.TrainConfig | None = None, desc: str = "distilling the draft") -> dict:
    """Fine-tune ``draft`` in place on the target's greedy continuations of ``prompts`` (token ids). Returns
    the training history (``T.train``'s) plus ``tokens``, the number of generated tokens it learned from.
    The last 10% of the generated stream is held out for the validation loss."""
    if draft.config.vocab_size != target.config.vocab_size:
        raise ValueError("the draft must share the target's vocabulary")
    reqs = Engine(target, max_batch=16).generate(prompts, SamplingParams(max_tokens=max_tokens, temperature=0))
    stream = np.concatenate([np.asarray(r.all_ids) for r in reqs])
    held = max(len(stream) // 10, draft.config.context + 2)
    if len(stream) - held <= draft.config.context + 1:
        raise ValueError(f"{len(stream)} tokens are too few to distil a draft with context {draft.config.context}")
    cfg = cfg or T.TrainConfig(steps=1000, batch_size=16, eval_every=1000, eval_batches=5, warmup=20, max_lr=1e-3,
                               min_lr=1e-4)
    hist = T.train(draft, stream[:-held], stream[-held:], cfg, desc=desc)
    draft.eval()
    return {**hist, "tokens": sum(len(r.output_ids) for r in reqs)}
