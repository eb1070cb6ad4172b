"""Benchmark contamination: does an eval item appear in a training corpus? GPT-3's 13-gram method (Brown et
al. 2020, appendix C): text is lower-cased and split into words without punctuation; an item is
*dirty* when any of its 13-grams occurs in the corpus (an item shorter than 13 words: when all of it does),
else *clean*. Scores are then reported on the clean subset next to the full one."""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(ws: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)}


class NgramIndex:
    """The set of a corpus's word n-grams (n = 13), plus its normalized text for items shorter than n."""

    def __init__(self, documents: Iterable[str], n: int = 13):
        self.n, self.grams, joined = n, set(), []
        for doc in documents:
            ws = words(doc)
            self.grams |= {hash(g) for g in ngrams(ws, n)}
            joined.append(" ".join(ws))
        self.text = " " + " \n ".join(joined) + " "

    def overlap(self, text: str) -> float:
        """The fraction of the item's n-grams found in the corpus (an item shorter than n: 1.0 when all of
        it occurs, else 0.0)."""
        ws = words(text)
        if len(ws) < self.n:
            return float(bool(ws) and f" {' '.join(ws)} " in self.text)
        grams = ngrams(ws, self.n)
        return sum(hash(g) in self.grams for g in grams) / len(grams)

    def dirty(self, text: str) -> bool:
        return self.overlap(text) > 0


def report(items: list[str], correct: list[bool], index: NgramIndex) -> dict:
    """How many items are dirty (and which: their indices), and the accuracy on all, clean and dirty items."""
    dirty = np.array([index.dirty(t) for t in items], dtype=bool)
    correct = np.asarray(correct, dtype=bool)

    def acc(mask):
        return float(correct[mask].mean()) if mask.any() else None

    return {"n": len(items), "dirty": int(dirty.sum()), "dirty_fraction": float(dirty.mean()) if len(items) else 0.0,
            "acc_all": acc(np.ones(len(items), bool)), "acc_clean": acc(~dirty), "acc_dirty": acc(dirty),
            "ngram": index.n, "dirty_items": np.flatnonzero(dirty).tolist()}
