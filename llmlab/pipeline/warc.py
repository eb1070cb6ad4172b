"""Streaming WARC / WET records from a file or an ``https://`` URL, without downloading the file first.

Common Crawl's files are gzip streams (one member per record for WARC and WET files, though excerpts are
often recompressed as one member); a transfer that stops early leaves a cut last member. :func:`records`
decompresses member after member as bytes arrive and parses each record by its ``Content-Length``; every
complete record is yielded, and a cut one is reported in :class:`ReadReport` (``truncated``), never
raised. warcio (the tests' reference) refuses single-member files and yields a cut record as if whole,
which is why this reader is llmlab's own.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

CC_BASE = "https://data.commoncrawl.org/"  # Common Crawl's public HTTPS endpoint (paths from *.paths.gz)
CHUNK = 1 << 16


@dataclass
class Record:
    type: str  # warcinfo, request, response, metadata, conversion (WET text), ...
    headers: dict[str, str]
    body: bytes

    @property
    def url(self) -> str | None:
        return self.headers.get("WARC-Target-URI")

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


@dataclass
class ReadReport:
    records: int = 0
    bytes_in: int = 0  # compressed bytes read
    truncated: dict | None = None  # the cut record: its headers and how much of its body arrived
    errors: list[str] = field(default_factory=list)


def _chunks(source: str | Path, chunk: int = CHUNK, timeout: float = 60.0) -> Iterator[bytes]:
    """Raw bytes of a local file or an http(s) URL, streamed."""
    source = str(source)
    if source.startswith(("http://", "https://")):
        import httpx

        with httpx.stream("GET", source, timeout=timeout, follow_redirects=True) as r:
            r.raise_for_status()
            yield from r.iter_bytes(chunk)
        return
    with open(source, "rb") as f:
        while block := f.read(chunk):
            yield block


def _gunzip_members(chunks: Iterable[bytes], report: ReadReport) -> Iterator[bytes]:
    """Decompressed bytes, gzip member after member, as the compressed bytes arrive."""
    d = zlib.decompressobj(31)
    for block in chunks:
        report.bytes_in += len(block)
        while block:
            yield d.decompress(block)
            if d.eof:  # the member ended inside this block: the rest starts the next one
                block, d = d.unused_data, zlib.decompressobj(31)
            else:
                block = b""


def _parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("utf-8", errors="replace").split("\r\n")
    if not lines[0].startswith("WARC/"):
        raise ValueError(f"not a WARC record: {lines[0][:40]!r}")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip()] = value.strip()
    return headers.get("WARC-Type", "?"), headers


def records(source: str | Path, report: ReadReport | None = None, types: tuple[str, ...] | None = None,
            chunk: int = CHUNK) -> Iterator[Record]:
    """Every complete record of a (gzipped) WARC/WET/WAT file or URL, in order, optionally only ``types``.
    Pass a :class:`ReadReport` to learn the counts and whether the stream ended inside a record."""
    report = report if report is not None else ReadReport()
    buf = bytearray()
    for data in _gunzip_members(_chunks(source, chunk), report):
        buf += data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            try:
                kind, headers = _parse_head(bytes(buf[:end]))
                length = int(headers.get("Content-Length", "0"))
                if length < 0:
                    raise ValueError(f"negative Content-Length {length}")
            except ValueError as e:  # garbage between records: report it and resynchronise at the next record
                report.errors.append(str(e))
                nxt = buf.find(b"WARC/", 1)
                del buf[:nxt if nxt > 0 else len(buf)]
                continue
            start = end + 4
            if len(buf) < start + length:
                break  # the body has not arrived yet
            body = bytes(buf[start:start + length])
            del buf[:start + length]
            while buf[:2] == b"\r\n":  # the record separator
                del buf[:2]
            report.records += 1
            if types is None or kind in types:
                yield Record(kind, headers, body)
    if buf.strip():
        end = buf.find(b"\r\n\r\n")
        try:
            kind, headers = _parse_head(bytes(buf[:end])) if end > 0 else ("?", {})
        except ValueError:
            kind, headers = "?", {}
        report.truncated = {"type": kind, "headers": headers, "body_bytes": max(0, len(buf) - end - 4),
                            "content_length": int(headers.get("Content-Length", "0") or 0)}
