"""The shared English Wikipedia sample (``wikipedia/enwiki-2015-wikiextractor-AA-wiki_00-59.txt.gz``): 3,957
articles as WikiExtractor wrote them (``<doc id url title>`` blocks; lists, tables and infoboxes dropped)."""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator

from llmlab.data import resolve

FILE = "wikipedia/enwiki-2015-wikiextractor-AA-wiki_00-59.txt.gz"
_DOC = re.compile(r'<doc id="(\d+)" url="([^"]*)" title="([^"]*)">\n(.*?)\n</doc>\n', re.S)


def articles(path=None, limit: int | None = None) -> Iterator[dict]:
    """Each article as {"id", "url", "title", "text"} (the text starts with the title line), in file order."""
    with gzip.open(resolve(FILE, path), "rt", encoding="utf-8") as f:
        text = f.read()
    for i, m in enumerate(_DOC.finditer(text)):
        if limit is not None and i >= limit:
            return
        yield {"id": int(m.group(1)), "url": m.group(2), "title": m.group(3), "text": m.group(4)}
