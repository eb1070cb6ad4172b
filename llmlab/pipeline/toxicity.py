"""A toxicity classifier llmlab trains itself, for filtering web text.

Logistic regression over hashed features (lower-cased word unigrams and bigrams, and character 3-5-grams
inside word boundaries, hashed into 2^18 buckets: the "hashing trick", so there is no vocabulary to store)
trained on Davidson et al.'s 24,783 labelled tweets (``toxicity/labeled_data.csv``): hate speech or offensive
(classes 0 and 1) against neither (class 2). L2-regularised cross-entropy minimised by full-batch L-BFGS (SciPy);
the model is a weight vector and a bias. Evaluated on a held-out 20% split against the majority-class
baseline (accuracy, ROC AUC).

Tweets are not web pages: the classifier learns slurs and insults, which is what a filter for web text
needs, and a web-page threshold is set high (0.9 by default) to keep its false positives few.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import os
import re
from dataclasses import dataclass

import numpy as np

BUCKETS = 1 << 18
_TOKEN = re.compile(r"[a-z0-9']+")
_NOISE = re.compile(r"@\w+|https?://\S+|&\w+;|\brt\b")


def clean(text: str) -> str:
    """Lower-cased, without the tweets' mentions, links, HTML entities and retweet marks."""
    return _NOISE.sub(" ", text.lower())


def features(text: str, buckets: int = BUCKETS) -> np.ndarray:
    """Bucket ids of the text's features (repeats kept: a feature's count is its value)."""
    words = _TOKEN.findall(clean(text))
    grams = [f"w:{w}" for w in words] + [f"b:{a} {b}" for a, b in itertools.pairwise(words)]
    for w in words:
        padded = f"<{w}>"
        grams += [f"c:{padded[i:i + n]}" for n in (3, 4, 5) for i in range(len(padded) - n + 1)]
    return np.array([int.from_bytes(hashlib.blake2b(g.encode(), digest_size=4).digest(), "little") % buckets
                     for g in grams], dtype=np.int64)


def matrix(texts: list[str], buckets: int = BUCKETS):
    """The texts' feature counts as a sparse (texts, buckets) matrix."""
    from scipy import sparse

    ids = [features(t, buckets) for t in texts]
    indptr = np.cumsum([0] + [len(i) for i in ids])
    cols = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    x = sparse.csr_matrix((np.ones(len(cols)), cols, indptr), shape=(len(texts), buckets))
    x.sum_duplicates()
    return x


@dataclass
class ToxicityClassifier:
    weight: np.ndarray  # (buckets,)
    bias: float
    buckets: int = BUCKETS

    def score(self, texts: list[str]) -> np.ndarray:
        """The probability that each text is hateful or offensive."""
        return 1 / (1 + np.exp(-(matrix(texts, self.buckets) @ self.weight + self.bias)))

    def save(self, path) -> None:
        np.savez_compressed(path, weight=self.weight, bias=self.bias, buckets=self.buckets)

    @classmethod
    def load(cls, path) -> ToxicityClassifier:
        with np.load(path) as z:
            return cls(z["weight"], float(z["bias"]), int(z["buckets"]))


def load_davidson(path=None) -> tuple[list[str], np.ndarray]:
    """(tweets, labels) with label 1 for hate speech or offensive language, 0 for neither."""
    from llmlab.data import resolve

    with open(resolve("toxicity/labeled_data.csv", path), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["tweet"] for r in rows], np.array([int(r["class"] != "2") for r in rows], dtype=np.int64)


def trained(path=None) -> ToxicityClassifier:
    """A classifier trained on all of the Davidson data with the default settings, kept in llmlab's cache
    folder under the data file's SHA-256 (training takes about 15 s; lab m13's judge and the tests reuse it)."""
    from llmlab.data import catalog, resolve

    source = resolve("toxicity/labeled_data.csv", path)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    cached = catalog.cache_dir().parent / "models" / f"toxicity-{digest}.npz"
    if cached.exists():
        return ToxicityClassifier.load(cached)
    clf = train(*load_davidson(source))
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".{os.getpid()}.npz")
    clf.save(tmp)
    os.replace(tmp, cached)  # atomic: concurrent runs never read a half-written file
    return clf


def objective(params: np.ndarray, x, y: np.ndarray, l2: float) -> tuple[float, np.ndarray]:
    """Mean binary cross-entropy plus l2/2 |w|^2 (the bias, the last parameter, unregularised), and its
    gradient."""
    w, b = params[:-1], params[-1]
    z = x @ w + b
    loss = np.mean(np.logaddexp(0, z) - y * z) + 0.5 * l2 * w @ w
    r = (1 / (1 + np.exp(-z)) - y) / len(y)
    return float(loss), np.append(x.T @ r + l2 * w, r.sum())


def train(texts: list[str], labels, l2: float = 1e-5, iterations: int = 200,
          buckets: int = BUCKETS) -> ToxicityClassifier:
    """Fit by L-BFGS (SciPy's L-BFGS-B, float64)."""
    from scipy.optimize import minimize

    x, y = matrix(texts, buckets), np.asarray(labels, dtype=float)
    res = minimize(objective, np.zeros(buckets + 1), args=(x, y, l2), jac=True, method="L-BFGS-B",
                   options={"maxiter": iterations, "gtol": 1e-8})
    return ToxicityClassifier(res.x[:-1].astype(np.float32), float(res.x[-1]), buckets)


def roc_auc(scores, labels) -> float:
    """The probability that a random positive scores above a random negative (ties count half)."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels).astype(bool)
    ranks = np.empty(len(scores))
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    pos, neg = labels.sum(), (~labels).sum()
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def split(n: int, test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(test, train) indices of a seeded random split of ``n`` examples."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(n * test_fraction)
    return order[:n_test], order[n_test:]


def train_and_evaluate(path=None, test_fraction: float = 0.2, seed: int = 0,
                       **kwargs) -> tuple[ToxicityClassifier, dict]:
    """Train on a random split of the Davidson set and report held-out accuracy, AUC and the baseline."""
    texts, labels = load_davidson(path)
    test, tr = split(len(texts), test_fraction, seed)
    clf = train([texts[i] for i in tr], labels[tr], **kwargs)
    p = clf.score([texts[i] for i in test])
    y = labels[test]
    majority = int(labels[tr].mean() >= 0.5)
    return clf, {"train": len(tr), "test": len(test), "positive_rate": float(labels.mean()),
                 "accuracy": float(((p >= 0.5) == y).mean()), "auc": roc_auc(p, y),
                 "majority_accuracy": float((y == majority).mean())}
