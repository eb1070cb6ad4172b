"""llmlab's builtin inference engine: a KV cache, continuous batching, sampling, and exact speculative
decoding (a draft model or n-gram prompt lookup).

    engine = Engine.from_folder("runs/.../hf-model", max_batch=8)
    engine.generate(["ROMEO:"], SamplingParams(max_tokens=50, temperature=0.8, seed=0))

Each :meth:`Engine.step` admits waiting requests into free KV-cache slots (one batched prefill), then
advances every running request by one decode step (batched across requests), or by one speculative step
(k proposed tokens verified by the target in one pass). Requests finish on ``max_tokens``, a stop string,
the end-of-text token or the context limit, and leave between steps; new ones join at the next step.

Speculative decoding accepts a proposed token x with probability min(1, p(x)/q(x)) and on rejection samples
from the normalised residual max(0, p - q), plus a bonus token from the target when all k are accepted, so
the output has exactly the target's distribution (Leviathan et al. 2023; Chen et al. 2023). p and q are the
distributions after the request's own temperature / top-k / top-p / min-p, so speculation samples exactly
what plain decoding would. Greedy (temperature 0) is the special case p, q one-hot.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

import torch
from torch import Tensor

from llmlab.inference import kvcache, sampler
from llmlab.inference.detokenizer import detokenize
from llmlab.inference.request import Request, SamplingParams
from llmlab.inference.spec_decode import SpecStats, SpeculativeDecoding, expected_tokens_per_step, rejection_step  # noqa: F401 -- their old home


class Engine(SpeculativeDecoding):
    """Continuous batching over one model (and an optional draft model or n-gram lookup for speculation)."""

    def __init__(self, model, tokenizer=None, max_batch: int = 8, draft=None, spec_tokens: int = 0,
                 ngram: tuple[int, int] | None = None, eos_token_id: int | None = None, name: str = "llmlab",
                 compile: bool = False):
        if draft is not None and ngram is not None:
            raise ValueError("speculate with a draft model or with n-gram lookup, not both")
        if (draft is not None or ngram is not None) and spec_tokens < 1:
            raise ValueError("speculative decoding needs spec_tokens >= 1")
        if draft is not None and draft.config.vocab_size != model.config.vocab_size:
            raise ValueError("the draft model must share the target's vocabulary")
        self.model, self.tokenizer, self.draft, self.name = model.eval(), tokenizer, draft, name
        self.spec_tokens, self.ngram = spec_tokens, ngram
        self.compile = compile  # run equal-length steps through torch.compile (kvcache.forward)
        self.max_batch = max_batch
        self.cache = kvcache.KVCache(model, max_batch)
        self.draft_cache = kvcache.KVCache(draft.eval(), max_batch) if draft is not None else None
        self.eos_token_id = eos_token_id if eos_token_id is not None else getattr(tokenizer, "eos_token_id", None)
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.spec = SpecStats()
        self.prompt_tokens = 0
        self.generation_tokens = 0

    @property
    def context(self) -> int:
        return self.model.config.context

    @property
    def vocab_size(self) -> int:
        return self.model.config.vocab_size

    @property
    def speculative(self) -> bool:
        return self.draft is not None or self.ngram is not None

    @classmethod
    def from_folder(cls, path, draft_path=None, dtype: torch.dtype = torch.float32, device: str = "cpu",
                    **kwargs) -> Engine:
        """Load a Hugging Face folder (llmlab's exports, any Llama or GPT-2 folder) and its tokenizer."""
        from llmlab import hf
        from llmlab.tokenization import model_tokenizer

        model = hf.load(path, dtype).to(device)
        tokenizer = model_tokenizer(path)
        draft = hf.load(draft_path, dtype).to(device) if draft_path else None
        return cls(model, tokenizer, draft=draft, name=Path(path).name, **kwargs)

    # --- requests ------------------------------------------------------------------------------------
    def new_request(self, prompt, params: SamplingParams | None = None) -> Request:
        """A validated request for a prompt (text, with a tokenizer, or token ids), not yet queued; raises
        ValueError for bad parameters, an empty prompt or one that leaves no room in the context."""
        params = params or SamplingParams()
        params.validate()
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise ValueError("the prompt is empty")
        if not all(type(i) is int and 0 <= i < self.vocab_size for i in ids):  # noqa: E721 - bools are ints
            raise ValueError(f"token ids must be integers in [0, {self.vocab_size})")
        if len(ids) >= self.context:
            raise ValueError(f"this model's maximum context length is {self.context} tokens; the prompt has "
                             f"{len(ids)}")
        req = Request(ids, params)
        if params.seed is not None:
            req.generator = torch.Generator().manual_seed(params.seed)
        return req

    def add(self, prompt, params: SamplingParams | None = None) -> Request:
        """Queue a prompt (see :meth:`new_request`)."""
        req = self.new_request(prompt, params)
        self.waiting.append(req)
        return req

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def generate(self, prompts, params: SamplingParams | None = None) -> list[Request]:
        """Run prompts to completion (continuous batching under the hood)."""
        reqs = [self.add(p, params) for p in prompts]
        while self.has_work():
            self.step()
        return reqs

    @torch.no_grad()
    def prompt_logprobs(self, ids: list[int], top: int = 0) -> list[dict | None]:
        """Each prompt token's log-probability given the tokens before it, with the ``top`` most likely
        alternatives (None for the first token), as vLLM's ``prompt_logprobs``: what ``echo`` with
        ``logprobs`` returns and evaluation harnesses score. One forward pass of its own, outside the batch."""
        x = torch.tensor([ids], device=next(self.model.parameters()).device)
        lp = torch.log_softmax(self.model(x)[0].double(), -1).cpu()
        out: list[dict | None] = [None]
        for i, tok in enumerate(ids[1:]):
            best = lp[i].topk(top) if top else None
            out.append({"token": tok, "logprob": float(lp[i, tok]),
                        "top": {int(j): float(v) for v, j in zip(*best, strict=True)} if best else {}})
        return out

    def warm_up(self) -> float:
        """With ``compile=True``, build the compiled graphs before serving: three short requests that leave
        one by one, then two of one token, take every kind of step a server will (one slot or more; one
        token or k + 1 per slot), so the first real requests do not wait for the compiler. Counters are
        left as they were. Returns the seconds it took (30-70 s on two CPU cores with a cold inductor
        cache, seconds with a warm one; 0 without ``compile``)."""
        if not self.compile:
            return 0.0
        t0, counters = time.perf_counter(), (self.spec, self.prompt_tokens, self.generation_tokens)
        per_step = self.spec_tokens + 1 if self.speculative else 1
        batch, self.max_batch = self.max_batch, min(self.max_batch, 3)
        try:
            for lengths in ((3 * per_step, 6 * per_step, 9 * per_step), (1, 1)):  # (1, 1): k = 0 for both
                for n in lengths:
                    self.add([0, 1, 0, 1], SamplingParams(max_tokens=min(n, self.context - 5), temperature=0))
                while self.has_work():
                    self.step()
        finally:
            self.max_batch = batch
            self.spec, self.prompt_tokens, self.generation_tokens = counters
        return time.perf_counter() - t0

    # --- one scheduler step ------------------------------------------------------------------------------
    def step(self) -> list[Request]:
        """Admit, prefill, decode; returns the requests that finished in this step."""
        admitted = []
        while self.waiting and self.cache.free and len(self.running) + len(admitted) < self.max_batch:
            req = self.waiting.popleft()
            req.slot = self.cache.allocate()
            if self.draft_cache is not None:
                req.draft_slot = self.draft_cache.allocate()
            admitted.append(req)
        self.running.extend(admitted)  # running from here: if this step fails, they fail with it
        if admitted:  # one batched prefill; all but the last prompt token go into the cache
            prefixes = [r.prompt_ids[:-1] for r in admitted]
            with_prefix = [(r, p) for r, p in zip(admitted, prefixes, strict=True) if p]
            if with_prefix:
                self._forward(self.model, self.cache, [r.slot for r, _ in with_prefix], [p for _, p in with_prefix],
                              logits=False)
            self.prompt_tokens += sum(len(r.prompt_ids) for r in admitted)
        if self.speculative and self.running:
            self._speculative_step(self.running)
        elif self.running:
            logits = self._forward(self.model, self.cache, [r.slot for r in self.running],
                                   [[r.all_ids[-1]] for r in self.running])
            for req, lg in zip(self.running, logits, strict=True):
                self._emit(req, [sampler.sample(req, lg[-1])], lg[-1:])
        return self._retire()

    def _retire(self) -> list[Request]:
        """Take finished requests out: free their slots, and move the others' down so the running rows stay
        one slice of the cache."""
        done = [r for r in self.running if r.finished]
        if done:
            self.running = [r for r in self.running if not r.finished]
            for cache, attr in ((self.cache, "slot"), (self.draft_cache, "draft_slot")):
                if cache is not None:
                    for req, slot in zip(self.running, cache.compact([getattr(r, attr) for r in self.running]),
                                         strict=True):
                        setattr(req, attr, slot)
        return done

    def abort(self, ids: set[str], reason: str = "abort") -> list[Request]:
        """Finish the requests with these ids, waiting or running (a client went away, or their batch failed);
        returns them, finished with ``reason``."""
        gone = [r for r in self.waiting if r.id in ids]
        self.waiting = deque(r for r in self.waiting if r.id not in ids)
        for req in self.running:
            if req.id in ids and not req.finished:
                req.finish_reason = reason
        for req in gone:
            req.finish_reason = reason
        return gone + self._retire()

    def _forward(self, model, cache, slots, tokens, logits: bool = True) -> list[Tensor]:
        return kvcache.forward(model, cache, slots, tokens, logits, compiled=self.compile)

    def _emit(self, req: Request, tokens: list[int], logits: Tensor) -> None:
        """Append tokens (with the logits they were drawn from), then check the stopping rules."""
        now = time.perf_counter()
        for tok, lg in zip(tokens, logits, strict=False):
            if req.finished:
                break
            req.output_ids.append(tok)
            req.token_times.append(now)
            req.first_token_at = req.first_token_at or now
            self.generation_tokens += 1
            if req.params.logprobs is not None:
                lp = torch.log_softmax(lg.double(), -1)
                top = lp.topk(req.params.logprobs) if req.params.logprobs else None
                req.logprobs.append({"token": tok, "logprob": float(lp[tok]),
                                     "top": {int(i): float(v) for v, i in zip(*top, strict=True)} if top else {}})
            if tok == self.eos_token_id:
                req.finish_reason = "stop"
            elif len(req.output_ids) >= req.params.max_tokens:
                req.finish_reason = "length"
            elif len(req.all_ids) >= self.context:
                req.finish_reason = "length"
        if self.tokenizer is not None:
            detokenize(self.tokenizer, req, self.eos_token_id)
