"""Tiny Shakespeare (Karpathy's char-rnn ``input.txt``): 1,115,394 characters of plain text. The split is
nanoGPT's: the first 90% for training, the last 10% for validation."""

from __future__ import annotations

from llmlab.data import resolve

FILE = "tinyshakespeare/input.txt"


def load_text(path=None) -> str:
    return resolve(FILE, path).read_text(encoding="utf-8")


def split(path=None, train_fraction: float = 0.9) -> tuple[str, str]:
    """(train, validation) text."""
    text = load_text(path)
    cut = int(len(text) * train_fraction)
    return text[:cut], text[cut:]


def char_tokens(path=None):
    """(CharTokenizer over the whole text, train ids, validation ids) as int64 arrays: the character-level
    data of the labs that train on Tiny Shakespeare (m09, m11)."""
    import numpy as np

    from llmlab.tokenization import CharTokenizer

    train, val = split(path)
    tok = CharTokenizer.train(train + val)
    return tok, np.array(tok.encode(train), dtype=np.int64), np.array(tok.encode(val), dtype=np.int64)
