"""The pipeline on Ray Data: Common Crawl files in, token shards and a per-stage report out.

``ray.data.from_items(sources).flat_map(read)`` streams documents out of each WARC/WET file or URL (one
task per file); the per-document stages run as ``map_batches`` (Ray fuses them into one task per block, so a
document is read, extracted, filtered and scored where it is); the dedup decision is the one global step:
the documents' keys (a 64-bit hash, line hashes, a MinHash signature: about 1 KiB each) come to the driver,
which decides, and a last ``map_batches`` applies the decisions and masks PII. The kept texts train a
byte-level BPE tokenizer and are written as uint16 shards (:mod:`.shards`). On a KubeRay cluster the same
code runs with more blocks in parallel; at Common Crawl scale the dedup decision would become a shuffle
by band key instead of a driver step.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from llmlab.pipeline import shards, stages, warc
from llmlab.settings import reject_unknown

SAMPLES = ("commoncrawl/CC-MAIN-2016-50-wet-00009-filtered25.warc.wet.gz",
           "commoncrawl/CC-MAIN-2016-50-wet-00009-head51200.warc.wet.gz",
           "commoncrawl/CC-MAIN-2020-34-sample.warc.gz", "commoncrawl/whirlwind.warc.gz")
# A whole WET file of Common Crawl (CC-MAIN-2018-17, its first segment's first file), streamed over HTTPS
CC_WET = (warc.CC_BASE + "crawl-data/CC-MAIN-2018-17/segments/1524125937193.1/wet/"
          "CC-MAIN-20180420081400-20180420101400-00000.warc.wet.gz")
EOS = "<|endoftext|>"


@dataclass(frozen=True)
class PipelineConfig:
    sources: tuple[str, ...] = SAMPLES  # data-folder paths, local files, or http(s) URLs of WARC/WET files
    settings: stages.Settings = field(default_factory=stages.Settings)
    vocab_size: int = 512
    shard_tokens: int = 1 << 20
    min_train_shards: int = 2  # at least one per training rank
    val_every: int = 10
    toxicity_seed: int = 0

    def __post_init__(self):
        if not self.sources:
            raise ValueError("the pipeline needs at least one source")
        if self.vocab_size < 257 or self.vocab_size > 1 << 16:
            raise ValueError("vocab_size must lie in [257, 65536] (bytes plus merges, uint16 shards)")
        object.__setattr__(self, "sources", tuple(self.sources))

    @classmethod
    def from_dict(cls, d: dict) -> PipelineConfig:
        """Unknown keys (here or under "settings") are an error."""
        stage_settings = dict(d.get("settings", {}))
        reject_unknown(cls, d, "pipeline")
        reject_unknown(stages.Settings, stage_settings, "pipeline stage")
        return cls(**{**d, "settings": stages.Settings(**stage_settings)})


def _resolve(source: str) -> str:
    if source.startswith(("http://", "https://")) or Path(source).exists():
        return source
    from llmlab.data import resolve

    return str(resolve(source))


def _apply(batch, step, **kwargs):
    """One stage over a pandas batch, document by document."""
    import pandas as pd

    return pd.DataFrame([step(row, **kwargs) for row in batch.to_dict("records")])


def process(cfg: PipelineConfig, classifier) -> list[dict]:
    """Every document through every stage on Ray Data (the current Ray connection, or a local one)."""
    import ray

    s = cfg.settings
    sources = [{"source": _resolve(src), "source_id": i} for i, src in enumerate(cfg.sources)]
    ds = ray.data.from_items(sources).flat_map(lambda row: list(stages.read(row["source"], row["source_id"])))
    for step, kwargs in stages.document_steps(classifier):
        ds = ds.map_batches(_apply, batch_format="pandas", fn_kwargs={"step": step, "s": s, **kwargs})
    ds = ds.materialize()  # the documents stay in the object store while the driver decides on duplicates
    keys = ds.map_batches(_apply, batch_format="pandas", fn_kwargs={"step": stages.dedup_keys, "s": s})
    decisions = stages.dedup_decisions(keys.to_pandas().to_dict("records"), s)
    ds = ds.map_batches(_apply, batch_format="pandas", fn_kwargs={"step": stages.apply_dedup, "s": s,
                                                                     "decisions": decisions})
    ds = ds.map_batches(_apply, batch_format="pandas", fn_kwargs={"step": stages.mask, "s": s})
    docs = ds.to_pandas().sort_values("id").to_dict("records")
    return [{k: v for k, v in d.items() if not (isinstance(v, float) and np.isnan(v))} for d in docs]


def process_local(cfg: PipelineConfig, classifier) -> list[dict]:
    """The same stages in one process, without Ray (the reference the Ray Data run is tested against, and
    the baseline it is benchmarked against)."""
    docs = [d for i, src in enumerate(cfg.sources) for d in stages.read(_resolve(src), i)]
    return stages.process_local(docs, cfg.settings, classifier)


def tokenize_and_shard(texts: list[str], out_dir: Path, cfg: PipelineConfig) -> dict:
    """Train a byte-level BPE on the kept texts, then write the train and validation shards."""
    from llmlab.tokenization import BPETokenizer

    tok = BPETokenizer.train("\n\n".join(texts), cfg.vocab_size, special_tokens=[EOS])
    tok.save(out_dir / "tokenizer")
    train, val = stages.split_for_validation([tok.encode(t) for t in texts], cfg.val_every)
    total = sum(len(i) + 1 for i in train)
    shard_tokens = max(1, min(cfg.shard_tokens, -(-total // cfg.min_train_shards)))
    meta = {"tokenizer": "tokenizer", "sources": list(cfg.sources)}
    shards.write_shards(train, out_dir, shard_tokens, tok.eos_token_id, tok.vocab_size, "train", meta)
    return shards.write_shards(val, out_dir, shard_tokens, tok.eos_token_id, tok.vocab_size, "val", meta)


def run(cfg: PipelineConfig, out_dir, address: str | None = None, classifier=None) -> dict:
    """The whole pipeline; writes ``out_dir/`` (shards, index.json, tokenizer/, documents.jsonl,
    report.json, pipeline.png, toxicity.npz) and returns the report. Without ``classifier`` the toxicity
    classifier is trained first (Davidson et al.'s tweets, about 15 s)."""
    import ray

    from llmlab.pipeline import toxicity

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    toxicity_metrics = None
    if classifier is None:
        classifier, toxicity_metrics = toxicity.train_and_evaluate(seed=cfg.toxicity_seed)
    classifier.save(out / "toxicity.npz")  # the scores in documents.jsonl can be reproduced
    timings = {"toxicity_classifier": time.perf_counter() - t0}
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, log_to_driver=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        docs = process(cfg, classifier)
    finally:
        if started:
            ray.shutdown()
    timings["ray_data"] = time.perf_counter() - t0 - timings["toxicity_classifier"]
    kept = [d for d in docs if not d["dropped"]]
    with open(out / "documents.jsonl", "w") as f:
        for d in docs:
            f.write(json.dumps({k: v for k, v in d.items() if k != "text" or not d["dropped"]}) + "\n")
    index = tokenize_and_shard([d["text"] for d in kept], out, cfg) if kept else None
    timings["tokenize_and_shard"] = time.perf_counter() - t0 - sum(timings.values())
    report = {"stages": stages.stage_report(docs), "documents": len(docs), "kept": len(kept),
              "pii": {k: int(sum(d.get(f"pii_{k}", 0) for d in kept)) for k in ("email", "phone", "ip")},
              "toxicity_classifier": toxicity_metrics, "seconds": timings, "config": asdict(cfg),
              "shards": index and {split: {"shards": len(v), "tokens": sum(s["tokens"] for s in v),
                                           "docs": sum(s["docs"] for s in v)} for split, v in index["splits"].items()}}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    plot_report(report, out / "pipeline.png")
    return report


def plot_report(report: dict, path) -> None:
    """Documents and megabytes after each stage (a funnel), and why documents were dropped."""
    from llmlab.plots import figure

    rows = report["stages"]
    names = [r["stage"] for r in rows]
    with figure(Path(path), f"Common Crawl to tokens: {report['documents']} documents in, {report['kept']} kept",
                ncols=2, size=(12, 4.5)) as (a, b):
        a.bar(names, [r["docs_out"] for r in rows], color="tab:blue")
        a.set_ylabel("documents kept")
        a2 = a.twinx()
        a2.plot(names, [r["bytes_out"] / 1e6 for r in rows], "o-", color="tab:orange")
        a2.set_ylabel("MB of text kept (orange)")
        a.set_title("after each stage")
        a.tick_params(axis="x", rotation=45)
        reasons = [(f"{r['stage']}:{k}", v) for r in rows for k, v in r["dropped"].items()]
        b.barh([k for k, _ in reasons][::-1], [v for _, v in reasons][::-1], color="tab:red")
        b.set_xlabel("documents dropped")
        b.set_title("why documents were dropped")
