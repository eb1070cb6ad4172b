"""Byte-level pre-tokenization: GPT-2's byte-to-character map, its split pattern and special tokens."""

from __future__ import annotations

# GPT-2's pre-tokenization pattern (Radford et al. 2019), also what tiktoken's "gpt2" encoding and Hugging Face's
# ByteLevel pre-tokenizer use.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters (vocab.json's alphabet)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, n = keep[:], 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(keep, map(chr, chars), strict=True))


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def to_unicode(token: bytes) -> str:
    return "".join(BYTE_TO_CHAR[b] for b in token)


def from_unicode(text: str) -> bytes:
    return bytes(CHAR_TO_BYTE[c] for c in text)


def _pattern():
    import regex

    return regex.compile(GPT2_PATTERN)


def _special_splitter(specials: list[str]):
    """A regex splitting text around special tokens (longest first, so overlapping ones resolve greedily)."""
    import regex

    if not specials:
        return None
    alternatives = "|".join(regex.escape(s) for s in sorted(specials, key=len, reverse=True))
    return regex.compile(f"({alternatives})")


def pretokenize_counts(text: str, specials: list[str] = ()) -> dict[bytes, int]:
    """Counts of GPT-2 pre-tokens (as UTF-8 bytes) in ``text``; special tokens split the text and are not
    counted (they are never merged)."""
    from collections import Counter

    pat, split = _pattern(), _special_splitter(list(specials))
    counts: Counter = Counter()
    for part in (split.split(text) if split else [text]):
        if part and part not in specials:
            counts.update(m.encode("utf-8") for m in pat.findall(part))
    return dict(counts)


def _chunks(text: str, n: int, specials: list[str]) -> list[str]:
    """About n pieces of text cut at newlines (never inside a pre-token or a special token)."""
    if n <= 1 or len(text) < 1_000_000:
        return [text]
    size, out, start = len(text) // n, [], 0
    while start < len(text):
        end = text.find("\n\n", start + size)
        end = len(text) if end < 0 else end + 2
        out.append(text[start:end])
        start = end
    return out
