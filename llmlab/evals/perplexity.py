"""Perplexity of causal language models with sliding-window (strided) evaluation.

A model is anything callable as ``model(ids) -> logits`` with ids (1, T) int64 and logits (1, T, V): an
llmlab model, a ``torch.nn.Module``, or a Hugging Face folder loaded by :func:`load_hf_causal_lm`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

CausalLM = Callable[[Tensor], Tensor]


def windows(n_tokens: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """The (begin, end, first_scored) windows of strided evaluation over a sequence of ``n_tokens``.

    Window i feeds ids[begin:end] (at most ``context`` tokens) and scores the targets
    max(end_prev, begin + 1)..end-1: the tokens no earlier window scored, each predicted from every token
    before it inside the window. A window's first token has no context inside it and is not scored there, so
    token 0 is never scored and, with disjoint windows (stride = context), neither is the first token of any
    window (the convention of Hugging Face's strided perplexity). stride = 1 gives every token the longest
    context the window allows.
    """
    if context < 2 or not 1 <= stride <= context:
        raise ValueError("need context >= 2 and 1 <= stride <= context")
    out, prev_end = [], 1
    for begin in range(0, n_tokens, stride):
        end = min(begin + context, n_tokens)
        if end > prev_end:
            out.append((begin, end, max(prev_end, begin + 1)))
            prev_end = end
        if end == n_tokens:
            break
    return out


@torch.no_grad()
def perplexity(model: CausalLM, ids: Tensor, context: int, stride: int | None = None) -> float:
    """exp(mean negative log-likelihood) of ``ids`` (T,) under ``model``, scoring every token but the first
    once, with windows of at most ``context`` tokens advancing by ``stride`` (default: context // 2)."""
    ids = ids.reshape(-1).long()
    stride = stride or max(1, context // 2)
    nll, count = 0.0, 0
    for begin, end, first in windows(len(ids), context, stride):
        logits = model(ids[begin:end].unsqueeze(0))[0].double()  # (end-begin, V)
        logp = torch.log_softmax(logits, dim=-1)
        targets = ids[first:end]
        pred = logp[first - 1 - begin: end - 1 - begin]  # position t-1 predicts token t
        nll -= float(pred.gather(-1, targets.unsqueeze(-1)).sum())
        count += len(targets)
    return math.exp(nll / count)


def load_hf_causal_lm(path: str | Path, dtype: torch.dtype = torch.float32) -> CausalLM:
    """A Hugging Face causal LM folder (config.json + weights) as a ``model(ids) -> logits`` callable."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).eval()
    return lambda ids: model(input_ids=ids).logits
