"""Extractive QA's answer metrics as SQuAD v1.1's official script computes them: answers normalized
(lower case, ASCII punctuation and the articles a/an/the removed, whitespace collapsed), exact match, and
the F1 of the bags of tokens; a prediction scores its best over the gold answers."""

from __future__ import annotations

import re
import string
from collections import Counter

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, answer: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(answer).split()
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def contains_answer(text: str, answers: list[str]) -> bool:
    """Whether ``text`` holds one of ``answers`` (case-insensitive substring): the test of "an answer was
    retrieved" that DPR's recall uses, and of a false negative when mining hard negatives."""
    low = text.lower()
    return any(a.lower() in low for a in answers)


def qa_scores(prediction: str, answers: list[str]) -> tuple[float, float]:
    """(exact match, F1), each the best over ``answers`` (0 for none)."""
    if not answers:
        return 0.0, 0.0
    em = max(float(normalize_answer(prediction) == normalize_answer(a)) for a in answers)
    return em, max(token_f1(prediction, a) for a in answers)
