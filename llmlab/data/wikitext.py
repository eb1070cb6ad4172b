"""WikiText-2 (Merity et al. 2016). Reads the tokenized v1 files (``wiki.test.tokens``) as shared here and
also the standard raw files (``wiki.test.raw``); both are plain text with " = Title = " headings."""

from __future__ import annotations

from llmlab.data import resolve

FILES = {"test": "wikitext-2/wiki.test.tokens", "valid": "wikitext-2/wiki.valid.tokens"}


def load_text(split: str = "test", path=None) -> str:
    if path is None and split not in FILES:
        raise ValueError(f"split must be one of {sorted(FILES)} (the shared copy has no train split)")
    return resolve(FILES.get(split, ""), path).read_text(encoding="utf-8")


def load_words(split: str = "test", path=None, eos: str | None = "<eos>") -> list[str]:
    """Whitespace tokens, with ``eos`` appended to every line (the official WikiText token count)."""
    words: list[str] = []
    for line in load_text(split, path).splitlines():
        words.extend(line.split())
        if eos is not None:
            words.append(eos)
    return words
