"""The pipeline's stages, one function per stage over one document (a dict), independent of Ray.

A document carries ``text`` and ``dropped`` (empty, or ``"stage:reason"``); a stage leaves dropped
documents alone and records ``bytes_<stage>`` (UTF-8 bytes of the text after it, 0 once dropped), so the
report can say for every stage how many documents and bytes went in and out, and why each was dropped.
:mod:`llmlab.pipeline.run` applies them with Ray Data's ``map_batches``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from llmlab.pipeline import dedup, extract, pii, quality, warc

# The order documents go through (read and dedup are special: read makes documents, dedup is global).
STAGES = ("read", "extract", "language", "gopher", "c4", "toxicity", "dedup", "pii")


@dataclass(frozen=True)
class Settings:
    extractor: str = "resiliparse"
    languages: tuple[str, ...] = ("en",)  # empty: every language
    min_language_prob: float = 0.65
    toxicity_threshold: float = 0.9
    near_duplicate_threshold: float = 0.8
    num_perm: int = 128
    bands: int = 16
    shingle: int = 5

    def __post_init__(self):
        if self.extractor not in extract.EXTRACTORS:
            raise ValueError(f"extractor must be one of {extract.EXTRACTORS}")
        if self.num_perm % self.bands:
            raise ValueError("num_perm must be a multiple of bands")
        object.__setattr__(self, "languages", tuple(self.languages))


def _nbytes(text: str) -> int:
    return len(text.encode("utf-8"))


def read(source: str, source_id: int = 0) -> Iterator[dict]:
    """Documents of one WARC/WET file or URL: HTML responses and WET conversion records; a cut last record
    and unparseable bytes become dropped documents ("read:truncated", "read:garbage")."""
    report = warc.ReadReport()
    n = 0
    for record in warc.records(source, report, types=("response", "conversion")):
        doc = {"id": source_id * 1_000_000 + n, "source": str(source), "url": record.url or "", "dropped": "",
               "bytes_read": len(record.body)}
        n += 1
        if record.type == "response":
            _, headers, body = extract.decode_http(record.body)
            html = "html" in headers.get("content-type", "text/html")
            doc.update(kind="html" if html else "other", text=body if html else "")
            if not html:
                doc["dropped"] = "read:not_html"
        else:
            doc.update(kind="text", text=record.text)
        yield doc
    lost = ([("truncated", report.truncated.get("body_bytes", 0))] if report.truncated else []) + \
        [("garbage", 0)] * len(report.errors)
    for reason, nbytes in lost:
        yield {"id": source_id * 1_000_000 + n, "source": str(source), "url": "", "kind": "lost", "text": "",
               "dropped": f"read:{reason}", "bytes_read": nbytes}
        n += 1


def _stage(name: str):
    """Wrap a per-document step: skip dropped documents, record the reason and the bytes after."""
    def wrap(fn):
        def apply(doc: dict, *args, **kwargs) -> dict:
            if not doc["dropped"]:
                reason = fn(doc, *args, **kwargs)
                if reason:
                    doc["dropped"] = f"{name}:{reason}"
            if doc["dropped"]:
                doc["text"] = ""
            doc[f"bytes_{name}"] = _nbytes(doc["text"])
            return doc
        apply.__name__ = name
        return apply
    return wrap


@_stage("extract")
def extract_text(doc: dict, s: Settings) -> str | None:
    if doc["kind"] == "html":
        doc["text"] = extract.html_to_text(doc["text"], s.extractor)
    return None if doc["text"].strip() else "empty"


@_stage("language")
def language(doc: dict, s: Settings) -> str | None:
    doc["lang"], doc["lang_prob"] = extract.identify_language(doc["text"])
    if s.languages and doc["lang"] not in s.languages:
        return doc["lang"]
    return "low_confidence" if doc["lang_prob"] < s.min_language_prob else None


@_stage("gopher")
def gopher(doc: dict, s: Settings) -> str | None:
    return quality.gopher_repetition(doc["text"]) or quality.gopher_quality(doc["text"])


@_stage("c4")
def c4(doc: dict, s: Settings) -> str | None:
    doc["text"], reason = quality.c4_filter(doc["text"])
    return reason


@_stage("toxicity")
def toxicity(doc: dict, s: Settings, classifier) -> str | None:
    doc["toxicity"] = float(classifier.score([doc["text"]])[0])
    return "toxic" if doc["toxicity"] > s.toxicity_threshold else None


def dedup_keys(doc: dict, s: Settings) -> dict:
    """What the global dedup step needs of a document, computed where the document is: the text's hash,
    its lines' hashes (hex strings: 64-bit values survive any table format; blank lines "") and its MinHash
    signature (values below 2^31). A dropped document has none."""
    if doc["dropped"]:
        return {"id": doc["id"], "hash": "", "lines": [], "signature": []}
    sig = dedup.MinHash(s.num_perm).signature(dedup.shingles(doc["text"], s.shingle))
    return {"id": doc["id"], "hash": f"{dedup.text_hash(doc['text']):016x}",
            "lines": [f"{h:016x}" if h is not None else "" for h in dedup.line_hashes(doc["text"])],
            "signature": [int(v) for v in sig]}


def dedup_decisions(keys: list[dict], s: Settings) -> dict[int, dict]:
    """The global step, over every document's keys in corpus order: exact duplicates (same normalized
    text) and near duplicates (MinHash-LSH) are dropped, the first of each group kept; then every line
    that occurred earlier in a kept document is removed."""
    keys = [k for k in sorted(keys, key=lambda k: k["id"]) if k["hash"]]
    decision, first = {}, {}
    for k in keys:
        if k["hash"] in first:
            decision[k["id"]] = {"drop": "exact", "of": first[k["hash"]]}
        else:
            first[k["hash"]] = k["id"]
    rest = [k for k in keys if k["id"] not in decision]
    signatures = [np.asarray(k["signature"], dtype=np.uint64) for k in rest]
    _, groups = dedup.near_duplicate_groups(signatures, s.near_duplicate_threshold, s.bands)
    for g in groups:
        for i in g[1:]:
            decision[rest[i]["id"]] = {"drop": "near", "of": rest[g[0]]["id"]}
    kept = [k for k in rest if k["id"] not in decision]
    lines_per_doc = [[h or None for h in k["lines"]] for k in kept]
    for k, lines in zip(kept, dedup.repeated_lines(lines_per_doc), strict=True):
        decision[k["id"]] = {"drop_lines": sorted(lines)}
    return decision


@_stage("dedup")
def apply_dedup(doc: dict, s: Settings, decisions: dict[int, dict]) -> str | None:
    d = decisions.get(doc["id"], {})
    if "drop" in d:
        doc["duplicate_of"] = d["of"]
        return d["drop"]
    doc["text"] = dedup.drop_lines(doc["text"], set(d.get("drop_lines", ())))
    return None if doc["text"].strip() else "no_new_lines"


@_stage("pii")
def mask(doc: dict, s: Settings) -> str | None:
    doc["text"], counts = pii.mask_pii(doc["text"])
    doc.update({f"pii_{k}": v for k, v in counts.items()})
    return None


def document_steps(classifier) -> list[tuple]:
    """The per-document stages before the global dedup step, in order, each with its extra arguments."""
    return [(extract_text, {}), (language, {}), (gopher, {}), (c4, {}), (toxicity, {"classifier": classifier})]


def process_local(docs: list[dict], s: Settings, classifier) -> list[dict]:
    """Every stage over the documents in this process, in place: what :func:`llmlab.pipeline.run.process`
    does on Ray Data."""
    for doc in docs:
        for step, kwargs in document_steps(classifier):
            step(doc, s, **kwargs)
    decisions = dedup_decisions([dedup_keys(d, s) for d in docs], s)
    for doc in docs:
        apply_dedup(doc, s, decisions)
        mask(doc, s)
    return docs


def stage_report(docs: list[dict]) -> list[dict]:
    """Per stage: documents and bytes in and out, and how many documents were dropped for each reason."""
    rows, alive, nbytes = [], None, None
    for name in STAGES:
        out = [d for d in docs if not d["dropped"] or STAGES.index(d["dropped"].split(":")[0]) > STAGES.index(name)]
        out_bytes = sum(d["bytes_read"] if name == "read" else d.get(f"bytes_{name}", 0) for d in out)
        reasons: dict[str, int] = {}
        for d in docs:
            if d["dropped"].startswith(name + ":"):
                r = d["dropped"].split(":", 1)[1]
                reasons[r] = reasons.get(r, 0) + 1
        rows.append({"stage": name, "docs_in": len(docs) if alive is None else alive,
                     "docs_out": len(out), "bytes_in": sum(d["bytes_read"] for d in docs) if nbytes is None else nbytes,
                     "bytes_out": out_bytes, "dropped": dict(sorted(reasons.items(), key=lambda kv: -kv[1]))})
        alive, nbytes = len(out), out_bytes
    return rows


def split_for_validation(docs: list[list[int]], every: int = 10) -> tuple[list[list[int]], list[list[int]]]:
    """(train, validation) token lists: every ``every``-th document goes to validation; with fewer
    documents than that, the last tenth of every document does (so both splits see every source)."""
    if len(docs) >= every:
        return ([d for i, d in enumerate(docs) if i % every != every - 1],
                [d for i, d in enumerate(docs) if i % every == every - 1])
    cuts = [len(d) - max(1, len(d) // 10) for d in docs]
    return [d[:c] for d, c in zip(docs, cuts, strict=True)], [d[c:] for d, c in zip(docs, cuts, strict=True)]
