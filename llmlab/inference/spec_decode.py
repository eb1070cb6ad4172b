"""Speculative decoding: proposals from a draft model or n-gram prompt lookup, verified by the target in one
pass with the rejection step that keeps the target's distribution exactly (Leviathan et al. 2023; Chen et
al. 2023), and the statistics vLLM reports of it. ``SpeculativeDecoding`` is the engine's speculative step
(the engine class mixes it in)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from llmlab.inference import sampler
from llmlab.inference.request import Request


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


class SpeculativeDecoding:
    """The engine's speculative step; uses the engine's model, caches, ``spec_tokens``, ``ngram``, ``spec``
    statistics, ``_forward`` and ``_emit``."""

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
                        q = sampler.probs(reqs[i], lg[-1])
                        x = sampler.draw(reqs[i], q)
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
                self._emit(req, [sampler.sample(req, lg[-1])], lg)
            self._sync_draft(req)

    def _verify(self, req: Request, proposals: list[int], q_probs: list[Tensor], target: Tensor) -> None:
        """Accept or reject one request's proposals given the target's logits at [last token, *proposals]."""
        if req.params.temperature == 0:  # p and q one-hot: accept while the target's argmax agrees
            best = target.argmax(-1).tolist()
            n = next((i for i, x in enumerate(proposals) if x != best[i]), len(proposals))
            final = best[n]
        else:
            p = sampler.probs(req, target)  # (k + 1, V): one call for all rows
            q = torch.stack(q_probs) if q_probs else torch.nn.functional.one_hot(torch.tensor(proposals),
                                                                               p.shape[-1]).double()
            u = torch.rand(len(proposals), generator=req.generator, dtype=torch.float64)
            n, dist = rejection_step(p, q, proposals, u)
            final = sampler.draw(req, dist)
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
