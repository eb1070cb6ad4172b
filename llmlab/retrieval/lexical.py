"""BM25 (Robertson et al.; Lucene's variant) over the passages with bm25s: the lexical baseline, the hard
negative miner, and one half of the hybrid."""

from __future__ import annotations

import numpy as np


class BM25:
    """``search(queries, k) -> (scores, ids)``, (n_queries, k) each; ids are row numbers of ``texts``."""

    def __init__(self, texts: list[str], k1: float = 1.5, b: float = 0.75):
        import bm25s

        self._bm25s = bm25s
        self.n = len(texts)
        self.retriever = bm25s.BM25(k1=k1, b=b)
        self.retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)

    def search(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        # the queries as strings, so their words map onto the corpus's vocabulary (unknown words drop out)
        tokens = self._bm25s.tokenize(queries, stopwords="en", return_ids=False, show_progress=False)
        k = min(k, self.n)
        ids, scores = self.retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        return scores.astype(np.float32), ids.astype(np.int64)
