"""Log-likelihood backends for evaluation harnesses: ``loglikelihood(requests) -> [(logprob, is_greedy)]`` for
(context, continuation) pairs, with lm-evaluation-harness's semantics, for any model:

- :class:`TorchLM`: a ``model(ids) -> logits`` callable and a tokenizer: llmlab models (``backend="llmlab"``,
  llmlab's own implementation of the folder's model) and Hugging Face folders (``backend="hf"``,
  ``transformers``), both through :func:`from_folder`;
- :class:`CompletionsLM`: any OpenAI-compatible ``/v1/completions`` endpoint that echoes the prompt's
  log-probabilities (``echo=true, logprobs=1``): llmlab's inference service, vLLM.

As lm-eval does: trailing spaces of the context move to the continuation; the continuation's tokens are
those of ``tokenize(context + continuation)`` after ``tokenize(context)``; inputs longer than the model's
context keep their last tokens (left truncation); ``is_greedy`` is whether every continuation token is the
model's argmax.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

Request = tuple[str, str]


def split_pair(context: str, continuation: str) -> tuple[str, str]:
    """Move the context's trailing whitespace to the continuation (lm-eval's ``_encode_pair``)."""
    n = len(context) - len(context.rstrip())
    return (context[:-n], context[-n:] + continuation) if n else (context, continuation)


class TorchLM:
    """A causal LM in this process: ``model(ids (B, T)) -> logits (B, T, V)``, ``encode(text) -> ids``."""

    def __init__(self, model: Callable, encode: Callable[[str], list[int]], max_length: int, batch_size: int = 16,
                 device: str = "cpu", progress: bool = True):
        self.model, self.encode, self.max_length = model, encode, max_length
        self.batch_size, self.device, self.progress = batch_size, device, progress

    def tokens(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(context ids, continuation ids). Without a context (or one of whitespace only, which moves to the
        continuation) the first token is the context: a model without a BOS token cannot score it."""
        context, continuation = split_pair(context, continuation)
        whole, ctx = self.encode(context + continuation), self.encode(context)
        return (ctx, whole[len(ctx):]) if ctx else (whole[:1], whole[1:])

    @torch.no_grad()
    def loglikelihood(self, requests: list[Request]) -> list[tuple[float, bool]]:
        # one forward per distinct input: the four choices of a question share theirs when each is one token
        jobs = []
        for context, continuation in requests:
            ctx, cont = self.tokens(context, continuation)
            if not cont or len(cont) > self.max_length:
                raise ValueError(f"the continuation {continuation!r} is empty or longer than the model's context")
            jobs.append((tuple((ctx + cont)[-(self.max_length + 1):][:-1]), cont))
        need: dict[tuple, int] = {}  # the rows each input's continuations read: only those are kept
        for inp, cont in jobs:
            need[inp] = max(need.get(inp, 0), len(cont))
        inputs = sorted(need, key=len, reverse=True)
        logits: dict[tuple, torch.Tensor] = {}
        batches = [inputs[i:i + self.batch_size] for i in range(0, len(inputs), self.batch_size)]
        for batch in tqdm(batches, desc="log-likelihoods", disable=not self.progress, mininterval=2):
            ids = torch.zeros(len(batch), len(batch[0]), dtype=torch.long)  # right padding: causal, unread
            for row, inp in enumerate(batch):
                ids[row, :len(inp)] = torch.tensor(inp)
            out = self.model(ids.to(self.device)).cpu()
            for row, inp in enumerate(batch):
                logits[inp] = out[row, len(inp) - need[inp]:len(inp)]
        return [continuation_logprob(logits[inp], torch.tensor(cont)) for inp, cont in jobs]


def continuation_logprob(logits: torch.Tensor, continuation: torch.Tensor) -> tuple[float, bool]:
    """(log-likelihood, is_greedy) of a continuation of n tokens given the model's ``logits`` (T, V) over
    its input: the input ends with the continuation's first n - 1 tokens, so ``logits[T - n + i]`` is the
    distribution of continuation token i. The log-likelihood sums the n log-probabilities (log-softmax,
    float64); greedy: each token is its row's argmax."""
    n = len(continuation)
    lp = torch.log_softmax(logits[len(logits) - n:].double(), -1)
    return float(lp.gather(-1, continuation[:, None].long()).sum()), bool((lp.argmax(-1) == continuation).all())


def from_folder(path, backend: str = "llmlab", batch_size: int = 16, device: str = "cpu",
                dtype: torch.dtype = torch.float32, progress: bool = True) -> TorchLM:
    """A Hugging Face model folder: run by llmlab's implementation (``"llmlab"``: llmlab's exports, Llama and
    GPT-2 folders) or by ``transformers`` (``"hf"``); its tokenizer as lm-eval loads it (``AutoTokenizer``)."""
    from transformers import AutoTokenizer

    if backend not in ("llmlab", "hf"):
        raise ValueError(f"unknown backend {backend!r}: 'llmlab' or 'hf' (or an endpoint, CompletionsLM)")
    path = Path(path)
    tok = AutoTokenizer.from_pretrained(str(path))
    if backend == "llmlab":
        from llmlab import hf

        model = hf.load(path, dtype).to(device).eval()
        max_length = model.config.context
    else:
        from transformers import AutoModelForCausalLM

        hf_model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).to(device).eval()
        cfg = hf_model.config
        max_length = next(getattr(cfg, k) for k in ("n_positions", "max_position_embeddings", "n_ctx")
                          if getattr(cfg, k, None))

        def model(ids):
            return hf_model(input_ids=ids).logits
    return TorchLM(model, tok.encode, max_length, batch_size, device, progress)


class CompletionsLM:
    """An OpenAI-compatible completions endpoint: each pair is sent as one prompt with ``echo=true,
    logprobs=1, max_tokens=1``; the continuation's tokens are the echoed prompt tokens whose text offset is
    at or past the end of the context (the prompt's first token, with no log-probability, is never one)."""

    def __init__(self, base_url: str, model: str, api_key: str = "EMPTY", timeout: float = 60,
                 progress: bool = True, http_client=None):
        from openai import OpenAI

        self.client = OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=3,
                             http_client=http_client)
        self.model, self.progress = model, progress

    def loglikelihood(self, requests: list[Request]) -> list[tuple[float, bool]]:
        results = []
        for context, continuation in tqdm(requests, desc="log-likelihoods", disable=not self.progress, mininterval=2):
            context, continuation = split_pair(context, continuation)
            prompt = context + continuation
            r = self.client.completions.create(model=self.model, prompt=prompt, echo=True, logprobs=1, max_tokens=1,
                                               temperature=0)
            lp = r.choices[0].logprobs
            picked = [i for i, off in enumerate(lp.text_offset) if len(context) <= off < len(prompt)]
            if not picked or picked[0] == 0 or any(lp.token_logprobs[i] is None for i in picked):
                raise RuntimeError(f"the endpoint did not echo the prompt's log-probabilities for {continuation!r} "
                                   "(it needs echo=true with logprobs, as vLLM's and llmlab's servers support)")
            greedy = all(max(lp.top_logprobs[i].values()) <= lp.token_logprobs[i] for i in picked)
            results.append((float(sum(lp.token_logprobs[i] for i in picked)), greedy))
        return results
