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

import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from llmlab.inference import kvcache
from llmlab.information import filtered_probs

_ids = itertools.count()


GREEDY_BELOW = 1e-5  # vLLM's _SAMPLING_EPS
MAX_STOP_STRINGS, MAX_STOP_CHARS = 16, 256


@dataclass
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    logprobs: int | None = None  # also return this many top alternatives per token (0: the chosen one only)

    def validate(self) -> None:
        """Raise ValueError for a parameter no request may have (the service answers 400)."""
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        if not self.temperature >= 0 or self.temperature == float("inf"):
            raise ValueError("temperature must be a finite number >= 0")
        if 0 < self.temperature < GREEDY_BELOW:  # 1/T overflows: below vLLM's epsilon, greedy (as vLLM does)
            self.temperature = 0.0
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise ValueError("seed must be in [0, 2^63)")
        if len(self.stop) > MAX_STOP_STRINGS or any(not s or len(s) > MAX_STOP_CHARS for s in self.stop):
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings of 1 to {MAX_STOP_CHARS} characters")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError("top_k must be >= 1")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.min_p is not None and not 0 <= self.min_p <= 1:
            raise ValueError("min_p must be in [0, 1]")
        if self.logprobs is not None and not 0 <= self.logprobs <= 20:
            raise ValueError("logprobs must be in [0, 20]")


@dataclass
class Request:
    prompt_ids: list[int]
    params: SamplingParams
    id: str = field(default_factory=lambda: f"req-{next(_ids)}")
    output_ids: list[int] = field(default_factory=list)
    text: str = ""
    logprobs: list[dict] = field(default_factory=list)
    finish_reason: str | None = None
    arrival: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    token_times: list[float] = field(default_factory=list)
    slot: int | None = None
    draft_slot: int | None = None
    generator: torch.Generator | None = None
    prefix_offset: int = 0  # incremental detokenization: output tokens decoded as context for the next ones
    read_offset: int = 0  # output tokens whose text is in ``text``

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def all_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids


@dataclass
class SpecStats:
    drafts: int = 0  # speculative steps taken
    draft_tokens: int = 0  # tokens proposed
    accepted_tokens: int = 0  # proposed tokens the target accepted
    emitted_tokens: int = 0  # tokens those steps produced (accepted + one resampled or bonus)
    rejections: int = 0  # steps that ended in a rejected proposal (the rest accepted all of theirs)

    @property
    def acceptance_rate(self) -> float:
        """Accepted / proposed, vLLM's definition (proposals after a rejection count as not accepted)."""
        return self.accepted_tokens / self.draft_tokens if self.draft_tokens else 0.0

    @property
    def per_token_acceptance(self) -> float:
        """Accepted / verified: the estimate of a in the closed form (proposals after a rejection are never
        verified, so they do not count)."""
        verified = self.accepted_tokens + self.rejections
        return self.accepted_tokens / verified if verified else 0.0

    @property
    def tokens_per_step(self) -> float:
        return self.emitted_tokens / self.drafts if self.drafts else 0.0


def rejection_step(p: Tensor, q: Tensor, draft: list[int], u: Tensor) -> tuple[int, Tensor]:
    """Verify k drafted tokens. p (k+1, V): the target's distributions at each drafted position and one
    more; q (k, V): the distributions the draft tokens were drawn from; u (k,): uniform draws. Token i is
    accepted while u[i] < min(1, p[i, x] / q[i, x]). Returns (n accepted, the distribution of the next
    token): at the first rejection the normalised residual max(0, p - q), or p[k] (the bonus token) when
    all k are accepted. Sampling that next token makes the output distributed exactly as p."""
    for i, x in enumerate(draft):
        if q[i, x] > 0 and u[i] < min(1.0, float(p[i, x] / q[i, x])):
            continue
        residual = (p[i] - q[i]).clamp(min=0)
        total = residual.sum()
        return i, residual / total if total > 0 else p[i]
    return len(draft), p[len(draft)]


def expected_tokens_per_step(acceptance: float, k: int) -> float:
    """(1 - a^(k+1)) / (1 - a): tokens per speculative step when each proposal is accepted independently
    with probability a (Leviathan et al. 2023, eq. 1)."""
    return float(k + 1) if acceptance >= 1 else (1 - acceptance ** (k + 1)) / (1 - acceptance)


class Engine:
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
                self._emit(req, [self._sample(req, lg[-1])], lg[-1:])
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

    def _probs(self, req: Request, logits: Tensor) -> Tensor:
        p = req.params
        return filtered_probs(logits.double(), p.temperature, p.top_k, p.top_p, p.min_p)

    def _sample(self, req: Request, logits: Tensor) -> int:
        if req.params.temperature == 0:
            return int(logits.argmax())
        return self._draw(req, self._probs(req, logits))

    @staticmethod
    def _draw(req: Request, probs: Tensor) -> int:
        """A token from a distribution: its argmax for greedy requests, else a draw with the request's seed."""
        if req.params.temperature == 0:
            return int(probs.argmax())
        return int(torch.multinomial(probs, 1, generator=req.generator))

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
            self._detokenize(req)

    def _detokenize(self, req: Request) -> None:
        """Extend the request's text by its new tokens' (incremental detokenization, as in vLLM): decode the
        new tokens after a few of context, once with and once without them, and append the difference, so
        a step costs the same however long the output is, and tokenizers whose text depends on neighbours
        (a leading space, bytes of one character split over tokens) come out as a full decode would. Text
        ending in half a UTF-8 character waits for the rest, unless the request has finished. Then stop
        strings are looked for in the new text (and the stop string's length before it)."""
        ids = req.output_ids[:-1] if req.output_ids and req.output_ids[-1] == self.eos_token_id else req.output_ids
        before = self.tokenizer.decode(ids[req.prefix_offset: req.read_offset])
        after = self.tokenizer.decode(ids[req.prefix_offset:])
        if after.endswith("\ufffd") and not req.finished:
            return
        seen = len(req.text)
        req.text += after[len(before):]
        req.prefix_offset, req.read_offset = req.read_offset, len(ids)
        for s in req.params.stop:
            cut = req.text.find(s, max(0, seen - len(s) + 1))
            if cut >= 0:
                req.text, req.finish_reason = req.text[:cut], "stop"

    # --- speculative decoding ------------------------------------------------------------------------
    def _propose_ngram(self, req: Request, k: int) -> list[int]:
        """Prompt lookup: the tokens that followed the latest earlier occurrence of the last n tokens
        (n from ngram max down to min)."""
        ids = req.all_ids
        hi, lo = self.ngram
        for n in range(min(hi, len(ids) - 1), lo - 1, -1):
            tail = ids[-n:]
            for start in range(len(ids) - n - 1, -1, -1):
                if ids[start: start + n] == tail:
                    return ids[start + n: start + n + k]
        return []

    def _speculative_step(self, reqs: list[Request]) -> None:
        """One speculative step for every running request, batched: the draft proposes for all of them
        together (k batched draft forwards), then one batched target forward verifies every request's
        proposals; each request then accepts or rejects its own."""
        # k per request: the room left (max_tokens, context) minus the one token every step emits anyway
        ks = [max(0, min(self.spec_tokens, req.params.max_tokens - len(req.output_ids) - 1,
                         self.context - len(req.all_ids) - 1)) for req in reqs]
        proposals: list[list[int]] = [[] for _ in reqs]
        q_probs: list[list[Tensor]] = [[] for _ in reqs]
        if self.draft is not None:
            feed = {i: req.all_ids[self.draft_cache.lengths[req.draft_slot]:] for i, req in enumerate(reqs) if ks[i]}
            for step in range(max(ks)):
                active = [i for i in feed if ks[i] > step]
                logits = self._forward(self.draft, self.draft_cache, [reqs[i].draft_slot for i in active],
                                       [feed[i] for i in active])
                for i, lg in zip(active, logits, strict=True):
                    if reqs[i].params.temperature == 0:  # greedy: q is one-hot at the argmax, no need to build it
                        x = int(lg[-1].argmax())
                    else:
                        q = self._probs(reqs[i], lg[-1])
                        x = self._draw(reqs[i], q)
                        q_probs[i].append(q)
                    proposals[i].append(x)
                    feed[i] = [x]
        else:
            proposals = [self._propose_ngram(req, k) if k else [] for req, k in zip(reqs, ks, strict=True)]
        target = self._forward(self.model, self.cache, [r.slot for r in reqs],
                               [[r.all_ids[-1], *props] for r, props in zip(reqs, proposals, strict=True)])
        for req, props, qs, lg in zip(reqs, proposals, q_probs, target, strict=True):
            if props:
                self._verify(req, props, qs, lg)
            else:  # nothing proposed: a plain decode step
                self._emit(req, [self._sample(req, lg[-1])], lg)
            self._sync_draft(req)

    def _verify(self, req: Request, proposals: list[int], q_probs: list[Tensor], target: Tensor) -> None:
        """Accept or reject one request's proposals given the target's logits at [last token, *proposals]."""
        if req.params.temperature == 0:  # p and q one-hot: accept while the target's argmax agrees
            best = target.argmax(-1).tolist()
            n = next((i for i, x in enumerate(proposals) if x != best[i]), len(proposals))
            final = best[n]
        else:
            p = self._probs(req, target)  # (k + 1, V): one call for all rows
            q = torch.stack(q_probs) if q_probs else torch.nn.functional.one_hot(torch.tensor(proposals),
                                                                               p.shape[-1]).double()
            u = torch.rand(len(proposals), generator=req.generator, dtype=torch.float64)
            n, dist = rejection_step(p, q, proposals, u)
            final = self._draw(req, dist)
        accepted = proposals[:n]
        self.spec.drafts += 1
        self.spec.draft_tokens += len(proposals)
        self.spec.accepted_tokens += len(accepted)
        self.spec.emitted_tokens += len(accepted) + 1
        self.spec.rejections += n < len(proposals)
        # keep in the cache the last token and the accepted proposals; drop what was rejected
        self.cache.lengths[req.slot] -= len(proposals) - len(accepted)
        self._emit(req, [*accepted, final], target[: len(accepted) + 1])

    def _sync_draft(self, req: Request) -> None:
        """Roll the draft's cache back to the tokens both models agree on."""
        if self.draft_cache is None:
            return
        slot = req.draft_slot
        self.draft_cache.lengths[slot] = min(self.draft_cache.lengths[slot], len(req.all_ids) - 1)
