"""Smoothed word n-gram language models: add-k and interpolated (Jelinek-Mercer) estimates.

``NGramLM.prob(word, context)`` is a proper conditional distribution over the vocabulary (which includes
``<unk>`` for words never seen in training), so perplexities are comparable with any other LM.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

UNK = "<unk>"
BOS = "<s>"


class NGramLM:
    """An order-``n`` word LM. ``smoothing="add-k"`` uses (c(h,w) + k) / (c(h) + k|V|) at the top order;
    ``"interpolated"`` mixes the maximum-likelihood estimates of orders n..1 and the uniform distribution with
    weights ``lambdas`` (highest order first), tuned on held-out text by :meth:`tune`."""

    def __init__(self, n: int = 3, smoothing: str = "interpolated", k: float = 0.01):
        if smoothing not in ("add-k", "interpolated"):
            raise ValueError("smoothing must be 'add-k' or 'interpolated'")
        self.n, self.smoothing, self.k = n, smoothing, k
        self.lambdas = _weights(n, 0.5, 0.5)
        self.counts: list[Counter] = []
        self.context_counts: list[Counter] = []
        self.vocab: set[str] = set()

    def fit(self, words: Sequence[str]) -> NGramLM:
        self.vocab = set(words) | {UNK}
        padded = [BOS] * (self.n - 1) + list(words)
        self.counts = [Counter() for _ in range(self.n + 1)]
        self.context_counts = [Counter() for _ in range(self.n + 1)]
        for order in range(1, self.n + 1):
            for i in range(self.n - 1, len(padded)):
                gram = tuple(padded[i - order + 1: i + 1])
                self.counts[order][gram] += 1
                self.context_counts[order][gram[:-1]] += 1
        return self

    def _ml(self, order: int, gram: tuple[str, ...]) -> float:
        c = self.context_counts[order][gram[:-1]]
        return self.counts[order][gram] / c if c else 0.0

    def prob(self, word: str, context: Sequence[str]) -> float:
        word = word if word in self.vocab else UNK
        ctx = tuple(w if w in self.vocab or w == BOS else UNK for w in context)
        ctx = ((BOS,) * (self.n - 1) + ctx)[-(self.n - 1):] if self.n > 1 else ()
        V = len(self.vocab)
        if self.smoothing == "add-k":
            gram = (*ctx, word)
            return (self.counts[self.n][gram] + self.k) / (self.context_counts[self.n][ctx] + self.k * V)
        p = self.lambdas[-1] / V
        for i, order in enumerate(range(self.n, 0, -1)):
            gram = (*ctx[len(ctx) - order + 1:], word) if order > 1 else (word,)
            p += self.lambdas[i] * self._ml(order, gram)
        return p

    def log_likelihood(self, words: Sequence[str]) -> float:
        history = [BOS] * (self.n - 1)
        total = 0.0
        for w in words:
            total += math.log(self.prob(w, history[-(self.n - 1):] if self.n > 1 else []))
            history.append(w if w in self.vocab else UNK)
        return total

    def perplexity(self, words: Sequence[str]) -> float:
        return math.exp(-self.log_likelihood(words) / len(words))

    def tune(self, heldout: Sequence[str], grid: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9)) -> NGramLM:
        """Pick interpolation weights lambda_n, lambda_{n-1} = (1 - lambda_n) a, ... on held-out text by
        grid search (geometric decay a per order) and a small uniform share."""
        best = (math.inf, self.lambdas)
        for top in grid:
            for decay in grid:
                self.lambdas = _weights(self.n, top, decay)
                ppl = self.perplexity(heldout)
                if ppl < best[0]:
                    best = (ppl, self.lambdas)
        self.lambdas = best[1]
        return self


def _weights(n: int, top: float, decay: float, uniform: float = 1e-3) -> list[float]:
    """Interpolation weights for orders n..1 and the uniform distribution: ``top`` to order n, then each
    lower order takes the share ``decay`` of what is left (order 1 takes the rest), ``uniform`` aside."""
    rest, weights = 1.0 - uniform, []
    for i in range(n):
        share = 1.0 if i == n - 1 else (top if i == 0 else decay)
        weights.append(rest * share)
        rest -= rest * share
    return [*weights, uniform]
