"""Deduplication: exact (documents by a hash of their normalized text, lines across the corpus, as C4 and
Gopher do) and near-duplicate by MinHash with LSH banding (Broder 1997; Leskovec et al., Mining of Massive
Datasets, ch. 3): two documents whose word 5-gram sets have Jaccard similarity s share a band of r rows with
probability 1 - (1 - s^r)^b, an S-curve whose threshold is about (1/b)^(1/r).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable

import numpy as np

MERSENNE = (1 << 31) - 1  # a prime; a x + b < 2^63 for a, x, b < p: exact in uint64
_WS = re.compile(r"\s+")


def normalize(text: str) -> str:
    """NFKC, lower case, punctuation dropped, whitespace collapsed: what counts as the same text."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(c for c in text if not unicodedata.category(c).startswith("P"))
    return _WS.sub(" ", text).strip()


def text_hash(text: str) -> int:
    """A 64-bit hash of the normalized text (exact duplicates share it)."""
    return int.from_bytes(hashlib.blake2b(normalize(text).encode(), digest_size=8).digest(), "little")


def exact_dedup(docs: list[str]) -> list[int]:
    """Indices of the documents to keep: the first of every group with the same normalized text."""
    seen, keep = set(), []
    for i, d in enumerate(docs):
        h = text_hash(d)
        if h not in seen:
            seen.add(h)
            keep.append(i)
    return keep


def line_hashes(text: str) -> list[int | None]:
    """:func:`text_hash` of each line (None for blank lines)."""
    return [text_hash(line) if line.strip() else None for line in text.split("\n")]


def repeated_lines(hashes_per_doc: list[list[int | None]]) -> list[set[int]]:
    """For each document, the indices of its lines that occurred earlier in the corpus (this document
    included); blank lines never count."""
    seen, out = set(), []
    for hashes in hashes_per_doc:
        repeats = set()
        for i, h in enumerate(hashes):
            if h is not None:
                if h in seen:
                    repeats.add(i)
                seen.add(h)
        out.append(repeats)
    return out


def drop_lines(text: str, indices: set[int]) -> str:
    return "\n".join(line for i, line in enumerate(text.split("\n")) if i not in indices)


def dedup_lines(docs: list[str]) -> tuple[list[str], int]:
    """Each line kept only where it first occurs in the corpus (blank lines kept); returns the documents
    and how many lines were dropped."""
    repeats = repeated_lines([line_hashes(d) for d in docs])
    return [drop_lines(d, r) for d, r in zip(docs, repeats, strict=True)], sum(map(len, repeats))


def shingles(text: str, n: int = 5) -> set[str]:
    """Word n-grams of the normalized text (the whole text when it has fewer than n words)."""
    words = normalize(text).split()
    return {" ".join(words[i:i + n]) for i in range(max(1, len(words) - n + 1))} if words else set()


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


class MinHash:
    """``num_perm`` hash functions h_i(x) = (a_i x + b_i) mod p (p = 2^31 - 1, a_i, b_i drawn below p) over
    shingle hashes reduced mod p; a signature is each function's minimum over a document's shingles, and the
    fraction of equal entries of two signatures estimates their Jaccard similarity. (a_i must range over the
    whole field: with a x smaller than a few p the functions barely permute and their minima agree far more
    often than the Jaccard similarity says.)"""

    def __init__(self, num_perm: int = 128, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, MERSENNE, num_perm, dtype=np.uint64)
        self.b = rng.integers(0, MERSENNE, num_perm, dtype=np.uint64)

    def signature(self, grams: Iterable[str]) -> np.ndarray:  # (num_perm,) uint64
        return minhash([shingle_hash(g) for g in grams] or [0], self.a, self.b)


def shingle_hash(gram: str) -> int:
    """A shingle's 64-bit BLAKE2b hash reduced mod p."""
    return int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=8).digest(), "little") % MERSENNE


def minhash(hashes, a, b) -> np.ndarray:
    """The MinHash signature of a set of shingle hashes (each below p = 2^31 - 1): for every hash function
    i, min over x of (a_i x + b_i) mod p. uint64 arithmetic is exact here, since a_i x + b_i < 2^62."""
    x = np.asarray(hashes, dtype=np.uint64)
    a, b = np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64)
    return ((np.outer(x, a) + b) % np.uint64(MERSENNE)).min(axis=0)


def estimate_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    return float(np.mean(sig_a == sig_b))


def lsh_candidates(signatures: list[np.ndarray], bands: int, rows: int) -> set[tuple[int, int]]:
    """Pairs (i < j) of signatures that agree on every row of at least one band; band k is the entries
    ``k * rows`` to ``(k + 1) * rows - 1``."""
    pairs = set()
    for band in range(bands):
        buckets: dict[bytes, list[int]] = {}
        for i, sig in enumerate(signatures):
            buckets.setdefault(sig[band * rows:(band + 1) * rows].tobytes(), []).append(i)
        for ids in buckets.values():
            pairs.update((ids[p], ids[q]) for p in range(len(ids)) for q in range(p + 1, len(ids)))
    return pairs


def candidate_probability(s: float, bands: int, rows: int) -> float:
    """The chance LSH banding makes a pair with Jaccard similarity s a candidate."""
    return 1 - (1 - s**rows) ** bands


def near_duplicate_groups(signatures: list[np.ndarray], threshold: float = 0.8,
                          bands: int = 16) -> tuple[list[int], list[list[int]]]:
    """Candidates from LSH banding, confirmed by the signature estimate >= threshold, grouped (union-find);
    returns (the first index of each group, the groups of more than one)."""
    if not signatures:
        return [], []
    num_perm = len(signatures[0])
    if num_perm % bands:
        raise ValueError("num_perm must be a multiple of bands")
    parent = list(range(len(signatures)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in lsh_candidates(signatures, bands, num_perm // bands):
        if estimate_jaccard(signatures[i], signatures[j]) >= threshold:
            ri, rj = root(i), root(j)
            parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = {}
    for i in range(len(signatures)):
        groups.setdefault(root(i), []).append(i)
    return sorted(groups), [g for g in groups.values() if len(g) > 1]


def near_dedup(docs: list[str], threshold: float = 0.8, num_perm: int = 128, bands: int = 16,
               n: int = 5, seed: int = 0) -> tuple[list[int], list[list[int]]]:
    """MinHash-LSH near-duplicate removal over word n-gram shingles; keeps the first document of each group.
    Returns (kept indices, groups of more than one)."""
    mh = MinHash(num_perm, seed)
    return near_duplicate_groups([mh.signature(shingles(d, n)) for d in docs], threshold, bands)


def minhash_accuracy(docs: list[str], num_perm: int = 128, n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(exact Jaccard, MinHash estimate) of every pair of documents' word n-gram sets."""
    grams = [shingles(d, n) for d in docs]
    mh = MinHash(num_perm)
    sigs = [mh.signature(g) for g in grams]
    pairs = [(i, j) for i in range(len(docs)) for j in range(i + 1, len(docs))]
    return (np.array([jaccard(grams[i], grams[j]) for i, j in pairs]),
            np.array([estimate_jaccard(sigs[i], sigs[j]) for i, j in pairs]))
