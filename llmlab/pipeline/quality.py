"""Heuristic quality filters: Gopher's (Rae et al. 2021, appendix A1.1) and C4's (Raffel et al. 2020, sec. 2.2).

Each filter returns the reason a document is dropped, or None to keep it (C4's also returns the text with its
bad lines removed). Words are :func:`words`: runs of word characters (with inner apostrophes and hyphens)
and runs of punctuation, roughly what NLTK's word tokenizer gives without its data download. The tests
run datatrove's implementations of the same rules with the same word and sentence splitting and require the
same decision on every document.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

_WORD = re.compile(r"\w+(?:['’-]\w+)*|[^\w\s]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=\S)")
GOPHER_STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
# Table A1 of the Gopher paper: the most frequent n-gram (n = 2, 3, 4) and all duplicated n-grams (n = 5..10)
# may cover at most these fractions of the characters
TOP_NGRAM_MAX = {2: 0.20, 3: 0.18, 4: 0.16}
DUP_NGRAM_MAX = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
C4_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
_CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")


def words(text: str) -> list[str]:
    """Runs of word characters, with inner apostrophes or hyphens ("don't", "well-known"), and runs of
    other non-space characters ("...", "#", "(", "!?"): ``re.findall(r"\\w+(?:['’-]\\w+)*|[^\\w\\s]+", text)``."""
    return _WORD.findall(text)


def sentences(text: str) -> list[str]:
    """Sentences split after . ! ? (and closing quotes or brackets) followed by white space."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def _is_symbol(word: str) -> bool:
    """A word made only of punctuation or symbols."""
    return all(unicodedata.category(c)[0] in "PS" for c in word)


def gopher_quality(text: str, min_words: int = 50, max_words: int = 100_000, min_mean_len: float = 3,
                   max_mean_len: float = 10, max_symbol_ratio: float = 0.1, max_bullet_lines: float = 0.9,
                   max_ellipsis_lines: float = 0.3, min_alpha_words: float = 0.8, min_stop_words: int = 2,
                   stop_words: frozenset[str] = GOPHER_STOP_WORDS) -> str | None:
    """Gopher's quality rules, in this order; the first that fails is returned ("reason"), None if all pass.
    Words are :func:`words`; "content words" are those not made only of Unicode punctuation or symbols
    (categories P* and S*); lines are ``text.splitlines()``.

    - too_few_words / too_many_words: content words < min_words or > max_words
    - short_words / long_words: mean length of the content words < min_mean_len or > max_mean_len
    - hash_ratio: count of "#" / number of words > max_symbol_ratio
    - ellipsis_ratio: (count of "..." + count of "…") / number of words > max_symbol_ratio
    - bullet_lines: fraction of lines whose left-stripped text starts with "•" or "-" > max_bullet_lines
    - ellipsis_lines: fraction of lines whose right-stripped text ends with "..." or "…" > max_ellipsis_lines
    - few_alphabetic_words: fraction of words with at least one alphabetic character < min_alpha_words
    - few_stop_words: fewer than min_stop_words distinct stop words among the words (case-sensitive)
    """
    ws = words(text)
    content = [w for w in ws if not _is_symbol(w)]
    if len(content) < min_words:
        return "too_few_words"
    if len(content) > max_words:
        return "too_many_words"
    mean_len = sum(map(len, content)) / len(content)
    if mean_len < min_mean_len:
        return "short_words"
    if mean_len > max_mean_len:
        return "long_words"
    if text.count("#") / len(ws) > max_symbol_ratio:
        return "hash_ratio"
    if (text.count("...") + text.count("…")) / len(ws) > max_symbol_ratio:
        return "ellipsis_ratio"
    lines = text.splitlines()
    if sum(line.lstrip().startswith(("•", "-")) for line in lines) / len(lines) > max_bullet_lines:
        return "bullet_lines"
    if sum(line.rstrip().endswith(("...", "…")) for line in lines) / len(lines) > max_ellipsis_lines:
        return "ellipsis_lines"
    if sum(any(c.isalpha() for c in w) for w in ws) / len(ws) < min_alpha_words:
        return "few_alphabetic_words"
    if len(stop_words & set(ws)) < min_stop_words:
        return "few_stop_words"
    return None


def _duplicate_chars(items: list[str]) -> tuple[int, int]:
    """(number, characters) of the items that repeat an earlier one."""
    seen, n, chars = set(), 0, 0
    for x in items:
        if x in seen:
            n, chars = n + 1, chars + len(x)
        seen.add(x)
    return n, chars


def _duplicated_ngram_chars(ws: list[str], n: int) -> int:
    """Characters in the n-grams that repeat an earlier n-gram, each word counted once (a repeat jumps
    past its n words)."""
    seen, chars, i = set(), 0, 0
    while i + n <= len(ws):
        gram = "".join(ws[i:i + n])
        if gram in seen:
            chars += len(gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return chars


def gopher_repetition(text: str, max_dup_lines: float = 0.3, max_dup_paragraphs: float = 0.3,
                      max_dup_line_chars: float = 0.2, max_dup_paragraph_chars: float = 0.2,
                      top_ngram_max: dict[int, float] = TOP_NGRAM_MAX,
                      dup_ngram_max: dict[int, float] = DUP_NGRAM_MAX) -> str | None:
    """Gopher's repetition rules, in this order; the first that fails is returned, None if all pass ("empty"
    for an empty text). Paragraphs are ``re.split(r"\\n{2,}", text.strip())``, lines ``re.split(r"\\n+", text)``;
    a duplicate is an item equal to an earlier one, and its characters are its length; fractions of
    characters are over ``len(text)``.

    - duplicate_paragraphs / duplicate_paragraph_chars: duplicate paragraphs / paragraphs, their characters
    - duplicate_lines / duplicate_line_chars: the same for lines
    - top_{n}_gram for n in top_ngram_max: the most frequent word n-gram (words joined by a space; the
      earliest in the text among equally frequent ones) times its count, in characters
    - duplicated_{n}_grams for n in dup_ngram_max: scan the words from i = 0 with a set of seen n-grams
      (words joined without spaces); a seen n-gram adds its length and jumps i by n, a new one is added to
      the set and i moves by 1
    """
    if not text:
        return "empty"
    paragraphs = re.split(r"\n{2,}", text.strip())
    n, chars = _duplicate_chars(paragraphs)
    if n / len(paragraphs) > max_dup_paragraphs:
        return "duplicate_paragraphs"
    if chars / len(text) > max_dup_paragraph_chars:
        return "duplicate_paragraph_chars"
    lines = re.split(r"\n+", text)
    n, chars = _duplicate_chars(lines)
    if n / len(lines) > max_dup_lines:
        return "duplicate_lines"
    if chars / len(text) > max_dup_line_chars:
        return "duplicate_line_chars"
    ws = words(text)
    for n, limit in top_ngram_max.items():
        grams = Counter(" ".join(ws[i:i + n]) for i in range(len(ws) - n + 1))
        if grams:
            gram, count = grams.most_common(1)[0]
            if len(gram) * count / len(text) > limit:
                return f"top_{n}_gram"
    for n, limit in dup_ngram_max.items():
        if _duplicated_ngram_chars(ws, n) / len(text) > limit:
            return f"duplicated_{n}_grams"
    return None


def c4_filter(text: str, min_sentences: int = 5, min_line_words: int = 3,
              max_word_chars: int = 1000) -> tuple[str, str | None]:
    """C4's rules: keep lines that end in terminal punctuation (not an ellipsis), have at least 3 words,
    no word over 1000 characters, and no 'javascript' or cookie/terms-of-use notice (citation marks
    removed); drop the page if it says 'lorem ipsum', has a curly bracket, or keeps fewer than 5 sentences.
    Returns (the kept lines, the reason the page is dropped or None)."""
    kept, n_sentences = [], 0
    for line in text.splitlines():
        line = line.strip()
        parts = line.split()
        if any(len(w) > max_word_chars for w in parts):
            continue
        line = _CITATION.sub("", line)
        if not line.endswith((".", "?", "!", '"', "'")) or line.endswith("..."):
            continue
        if len(parts) < min_line_words:
            continue
        low = line.lower()
        if "lorem ipsum" in low:
            return "", "lorem_ipsum"
        if "javascript" in low:
            continue
        if "{" in line:
            return "", "curly_bracket"
        if any(p in low for p in C4_POLICY):
            continue
        n_sentences += len(sentences(line))
        kept.append(line)
    if n_sentences < min_sentences:
        return "", "too_few_sentences"
    return "\n".join(kept).strip(), None
