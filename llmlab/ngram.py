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


class KneserNeyLM:
    """Interpolated Kneser-Ney (Chen & Goodman 1999, one discount per order) of order ``n`` over any tokens
    (words, or characters: pass ``list(text)``).

    The highest order uses counts, lower orders *continuation* counts N1+(. h w) (how many distinct tokens
    precede h w), the lowest interpolates with the uniform distribution over the vocabulary (which includes
    ``<unk>``). Each order is max(c - D, 0)/c(h) + D N1+(h .)/c(h) * P_lower, so every conditional
    distribution sums to 1. Discounts default to D = n1 / (n1 + 2 n2) per order (Ney et al. 1994).
    """

    def __init__(self, n: int = 3, discounts: Sequence[float] | None = None):
        if n < 1:
            raise ValueError("n must be >= 1")
        self.n, self._fixed = n, list(discounts) if discounts is not None else None
        self.vocab: list[str] = []

    def fit(self, tokens: Sequence[str]) -> KneserNeyLM:
        n = self.n
        self.vocab = sorted(set(tokens) | {UNK})
        self._index = set(self.vocab)
        padded = [BOS] * (n - 1) + list(tokens)
        top = Counter(tuple(padded[i - n + 1: i + 1]) for i in range(n - 1, len(padded)))
        # counts[k]: order-k grams (k = 1..n): raw at the top, continuation counts below
        counts: list[Counter] = [Counter() for _ in range(n + 1)]
        counts[n] = top
        for k in range(n - 1, 0, -1):
            for gram in counts[k + 1]:
                counts[k][gram[1:]] += 1
        self.counts = counts
        self.context_total = [Counter() for _ in range(n + 1)]  # sum over w of counts[k][h + (w,)]
        self.context_types = [Counter() for _ in range(n + 1)]  # N1+(h .)
        for k in range(1, n + 1):
            for gram, c in counts[k].items():
                self.context_total[k][gram[:-1]] += c
                self.context_types[k][gram[:-1]] += 1
        self.discounts = self._fixed or [self._discount(counts[k]) for k in range(1, n + 1)]
        return self

    @staticmethod
    def _discount(counts: Counter) -> float:
        n1 = sum(1 for c in counts.values() if c == 1)
        n2 = sum(1 for c in counts.values() if c == 2)
        return n1 / (n1 + 2 * n2) if n1 + n2 else 0.5

    def _p(self, k: int, word: str, ctx: tuple[str, ...]) -> float:
        """Probability at order k (context of k - 1 tokens)."""
        if k == 0:
            return 1.0 / len(self.vocab)
        h = ctx[len(ctx) - (k - 1):] if k > 1 else ()
        total = self.context_total[k][h]
        lower = self._p(k - 1, word, ctx)
        if total == 0:
            return lower
        D = self.discounts[k - 1]
        return max(self.counts[k][(*h, word)] - D, 0.0) / total + D * self.context_types[k][h] / total * lower

    def _clean(self, context: Sequence[str]) -> tuple[str, ...]:
        ctx = tuple(w if w in self._index or w == BOS else UNK for w in context)
        return ((BOS,) * (self.n - 1) + ctx)[-(self.n - 1):] if self.n > 1 else ()

    def prob(self, word: str, context: Sequence[str] = ()) -> float:
        """P(word | the last n - 1 tokens of context); unknown tokens count as ``<unk>``."""
        return self._p(self.n, word if word in self._index else UNK, self._clean(context))

    def distribution(self, context: Sequence[str] = ()) -> dict[str, float]:
        ctx = self._clean(context)
        return {w: self._p(self.n, w, ctx) for w in self.vocab}

    def log_likelihood(self, tokens: Sequence[str]) -> float:
        history = [BOS] * (self.n - 1)
        total = 0.0
        for w in tokens:
            total += math.log(self.prob(w, history[len(history) - (self.n - 1):] if self.n > 1 else ()))
            history.append(w)
        return total

    def perplexity(self, tokens: Sequence[str]) -> float:
        return math.exp(-self.log_likelihood(tokens) / len(tokens))
