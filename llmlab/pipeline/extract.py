"""HTML to text, and which language the text is in.

A WARC ``response`` record holds the HTTP response as it came over the wire: status line, headers, body.
:func:`decode_http` splits it and decodes the body (the charset the headers declare, otherwise
resiliparse's detector). :func:`html_to_text` extracts the main content with resiliparse (fast, C++) or
trafilatura (slower, a different set of boilerplate heuristics); :func:`compare_extractors` runs both on the
same pages. :func:`identify_language` is py3langid (langid.py's model, shipped in the package: 97
languages, no download) with normalized probabilities.
"""

from __future__ import annotations

import re
import time
from functools import lru_cache

EXTRACTORS = ("resiliparse", "trafilatura")
_CHARSET = re.compile(rb"charset=[\"']?([\w.:-]+)", re.I)


def decode_http(payload: bytes) -> tuple[str, dict[str, str], str]:
    """(status line, headers with lower-case names, decoded body) of an HTTP response."""
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    head, _, body = payload.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    declared = _CHARSET.search(headers.get("content-type", "").encode("latin-1"))
    encoding = declared.group(1).decode() if declared else detect_encoding(body)
    try:
        text = bytes_to_str(body, encoding)
    except LookupError:  # a charset Python does not know: let the detector decide
        text = bytes_to_str(body, detect_encoding(body))
    return lines[0], headers, text


def html_to_text(html: str, extractor: str = "resiliparse") -> str:
    """The main content of an HTML page as plain text (paragraphs on their own lines)."""
    if extractor == "resiliparse":
        from resiliparse.extract.html2text import extract_plain_text

        return extract_plain_text(html, main_content=True, alt_texts=False).strip()
    if extractor == "trafilatura":
        import trafilatura

        return (trafilatura.extract(html, include_comments=False, include_tables=False) or "").strip()
    raise ValueError(f"unknown extractor {extractor!r}; choose one of {EXTRACTORS}")


def word_overlap(a: str, b: str) -> float:
    """Jaccard similarity of the two texts' word sets (1.0 for two empty texts)."""
    wa, wb = set(a.split()), set(b.split())
    return len(wa & wb) / len(wa | wb) if wa | wb else 1.0


def compare_extractors(pages: list[tuple[str, str]]) -> list[dict]:
    """Both extractors on each (url, html): characters kept, milliseconds, detected language, and the word
    overlap of the two texts."""
    rows = []
    for url, html in pages:
        row = {"url": url, "html_chars": len(html)}
        texts = {}
        for name in EXTRACTORS:
            t0 = time.perf_counter()
            texts[name] = html_to_text(html, name)
            row[f"{name}_ms"] = 1e3 * (time.perf_counter() - t0)
            row[f"{name}_chars"] = len(texts[name])
            row[f"{name}_lang"] = identify_language(texts[name])[0]
        row["word_overlap"] = word_overlap(*texts.values())
        rows.append(row)
    return rows


@lru_cache(1)
def _identifier():
    from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_modelpath(MODEL_DIR / MODEL_FILE, norm_probs=True)


def identify_language(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, probability) of the most likely language; ("und", 0.0) for text without letters."""
    if not any(c.isalpha() for c in text):
        return "und", 0.0
    lang, prob = _identifier().classify(text.replace("\n", " "))
    return lang, float(prob)
