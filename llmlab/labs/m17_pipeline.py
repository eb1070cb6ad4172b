"""Lab m17: the LLM engineering pipeline. Gopher's quality and repetition rules, exact and MinHash-LSH
deduplication, PII masking, uint16 token shards and the W&B log format; the deliverable streams the Common
Crawl samples through extraction, language identification, quality and toxicity filters, dedup and PII
masking on Ray Data, shards the result, and pretrains on it with DDP on Ray Train, logging to W&B."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from llmlab.labs import m17_inputs as inputs
from llmlab.labs.base import CheckContext, Lab, LabLimits
from llmlab.pipeline import dedup, pii, quality, shards
from llmlab.plots import figure

LAB = Lab("m17", module=__name__, reference="llmlab.pipeline.quality",
          spec=["words", "gopher_quality", "gopher_repetition", "llmlab.pipeline.dedup:normalize",
                "llmlab.pipeline.dedup:exact_dedup", "llmlab.pipeline.dedup:minhash",
                "llmlab.pipeline.dedup:lsh_candidates", "llmlab.pipeline.dedup:candidate_probability",
                "llmlab.pipeline.pii:mask_pii", "llmlab.pipeline.shards:write_shards",
                "llmlab.pipeline.shards:read_shard", "llmlab.tracking:log_records"],
          limits=LabLimits(call_timeout_s=60, total_timeout_s=300, memory_mb=2048),
          own_work="the Gopher rules, MinHash signatures and LSH banding, exact-dedup hashing, PII regexes, "
                   "token shard writing and reading, the LevelDB log framing of W&B run files",
          forbidden=("datatrove", "datasketch", "warcio", "wandb"), ray_workload=True)

def _compare_reasons(ctx: CheckContext, name: str, n: int) -> None:
    reference = getattr(quality, name)
    seen = set()
    for i in range(n):
        text = inputs.document(ctx, inputs.KINDS[i % len(inputs.KINDS)], strong=i < len(inputs.KINDS))
        want = reference(text)
        got = ctx.call(name, text)
        ctx.expect(got is None or isinstance(got, str), f"{name} returns a reason (str) or None")
        ctx.expect(got == want, f"{name} on a hidden document ({len(text)} characters, starting "
                   f"{text[:60]!r}) returned {got!r}; want {want!r}")
        seen.add(want)
    ctx.expect(len(seen) >= 4, "the hidden documents exercise several rules")  # guards this check itself


@LAB.check(points=3, grades="ingestion")
def gopher_quality_rules(ctx: CheckContext):
    """words() splits like the reference on hidden text, and gopher_quality returns the same reason (or None)
    as the reference on 44 hidden documents built to sit on both sides of each rule's threshold."""
    text = inputs.document(ctx, "hashes") + " don't well-known (x) !? ...…"
    got = ctx.call("words", text)
    ctx.expect(got == quality.words(text), f"words({text[-40:]!r}) ends {got[-8:] if isinstance(got, list) else got}"
               f"; want {quality.words(text)[-8:]}")
    _compare_reasons(ctx, "gopher_quality", 44)


@LAB.check(points=2, grades="ingestion")
def gopher_repetition_rules(ctx: CheckContext):
    """gopher_repetition returns the same reason (or None) as the reference on 44 hidden documents with
    duplicated lines and paragraphs and repeated n-grams."""
    _compare_reasons(ctx, "gopher_repetition", 44)


@LAB.check(points=1, grades="ingestion")
def exact_dedup_hashing(ctx: CheckContext):
    """normalize folds case, NFKC forms, punctuation and white space; exact_dedup keeps the first document of
    each group with the same normalized text, in order."""
    variants = [lambda t: t, str.upper, lambda t: t.replace(" ", "  \n "), lambda t: t.replace(".", "!"),
                lambda t: t.replace("a", "ａ"), lambda t: t + " ..."]
    originals = [inputs.prose(ctx, ctx.randint(1, 3)) for _ in range(6)]
    docs = [ctx.choice(variants)(ctx.choice(originals)) for _ in range(20)]
    for d in docs[:4]:
        got = ctx.call("normalize", d)
        ctx.expect(got == dedup.normalize(d), f"normalize({d[:50]!r}...) = {str(got)[:50]!r}...; want "
                   f"{dedup.normalize(d)[:50]!r}...")
    got = ctx.call("exact_dedup", docs)
    ctx.expect(isinstance(got, list) and [int(i) for i in got] == dedup.exact_dedup(docs),
               f"exact_dedup kept {got}; want {dedup.exact_dedup(docs)}")


def probe_minhash(sub, hashes, a, b):
    sig = np.asarray(sub.minhash(hashes, a, b))
    return [sig.dtype.kind, [int(v) for v in sig]]


@LAB.check(points=2, grades="ingestion")
def minhash_signatures(ctx: CheckContext):
    """minhash(hashes, a, b) is an integer array equal to min over x of (a_i x + b_i) mod (2^31 - 1), for hidden hash
    functions near the top of the field (no overflow), and its agreement rate over 256 functions estimates the
    Jaccard similarity J of two sets: the reference's estimate, within 5 binomial standard errors of J."""
    p = dedup.MERSENNE
    a = ctx.rng.integers(1, p, 64).tolist()
    b = ctx.rng.integers(0, p, 64).tolist()
    a[0], b[0] = p - 1, p - 1
    hashes = ctx.rng.integers(0, p, ctx.randint(1, 300)).tolist() + [p - 1]
    kind, got = ctx.run(probe_minhash, hashes, a, b)
    ctx.expect(kind in ("u", "i"), f"the signature must hold integers (a numpy dtype of kind u or i), not {kind!r}")
    want = dedup.minhash(hashes, a, b).tolist()
    ctx.expect(got == want, f"{sum(g != w for g, w in zip(got, want, strict=False))} of 64 signature entries "
               "differ from min_x (a x + b) mod p")
    a, b = ctx.rng.integers(1, p, 256).tolist(), ctx.rng.integers(0, p, 256).tolist()
    shared, only = ctx.randint(100, 400), ctx.randint(50, 400)
    pool = ctx.rng.choice(p, shared + 2 * only, replace=False).tolist()
    s1, s2 = pool[:shared + only], pool[:shared] + pool[shared + only:]
    sig1, sig2 = (np.array(ctx.run(probe_minhash, s, a, b)[1]) for s in (s1, s2))
    est, exact, ref = float(np.mean(sig1 == sig2)), shared / (shared + 2 * only), dedup.minhash
    ctx.close(est, float(np.mean(ref(s1, a, b) == ref(s2, a, b))), atol=1e-12, what="Jaccard estimate vs reference")
    ctx.close(est, exact, atol=5 * (exact * (1 - exact) / 256) ** 0.5, what="estimated Jaccard similarity")


def probe_lsh(sub, signatures, bands, rows):
    return sorted([int(i), int(j)] for i, j in sub.lsh_candidates([np.array(s, dtype=np.uint64)
                                                                    for s in signatures], bands, rows))


@LAB.check(points=2, grades="ingestion")
def lsh_banding(ctx: CheckContext):
    """lsh_candidates finds exactly the pairs that agree on a whole band (hidden signatures with planted
    band collisions), and candidate_probability(s, b, r) = 1 - (1 - s^r)^b."""
    bands, rows = ctx.randint(3, 9), ctx.randint(2, 6)
    sigs = ctx.rng.integers(0, 5, (ctx.randint(8, 20), bands * rows))
    for _ in range(6):  # plant whole-band copies
        i, j, k = ctx.randint(0, len(sigs)), ctx.randint(0, len(sigs)), ctx.randint(0, bands)
        sigs[j, k * rows:(k + 1) * rows] = sigs[i, k * rows:(k + 1) * rows]
    got = ctx.run(probe_lsh, sigs.tolist(), bands, rows)
    want = sorted([i, j] for i, j in dedup.lsh_candidates(list(sigs.astype(np.uint64)), bands, rows))
    ctx.expect(got == want, f"candidate pairs {got[:6]}...; want {want[:6]}... ({len(want)} pairs)")
    for _ in range(5):
        s, b, r = float(ctx.rng.uniform(0, 1)), ctx.randint(1, 40), ctx.randint(1, 12)
        ctx.close(ctx.number(ctx.call("candidate_probability", s, b, r), "probability"),
                  1 - (1 - s**r) ** b, atol=1e-12, what=f"candidate probability at s={s:.3f}, b={b}, r={r}")


@LAB.check(points=1, grades="ingestion")
def pii_masking(ctx: CheckContext):
    """mask_pii masks emails, phone numbers and IPv4 addresses in hidden text (with decoys: octets over
    255, longer dotted numbers, version numbers, years, handles) exactly as specified, and counts them."""
    for _ in range(6):
        text = inputs.pii_text(ctx)
        want = pii.mask_pii(text)
        got = ctx.call("mask_pii", text)
        ctx.expect(isinstance(got, list | tuple) and len(got) == 2, "mask_pii returns (text, counts)")
        ctx.expect(got[1] == want[1] and got[0] == want[0], f"on {text!r}: got {got[0]!r} with counts {got[1]}; "
                   f"want {want[0]!r} with counts {want[1]}")


def probe_shards(sub, docs, shard_tokens, eos, vocab):
    """In the sandbox: the learner writes shards, we read the files back raw; then the learner reads a shard
    we wrote."""
    folder = tempfile.mkdtemp()
    index = sub.write_shards(docs, folder, shard_tokens, eos, vocab)
    raw = {f: np.frombuffer(open(os.path.join(folder, f), "rb").read(), dtype="<u2").tolist()
           for f in sorted(os.listdir(folder)) if f.endswith(".bin")}
    ours = np.array([t for d in docs[:3] for t in list(d) + [eos]], dtype="<u2")
    theirs = os.path.join(tempfile.mkdtemp(), "ours.bin")
    with open(theirs, "wb") as f:
        f.write(ours.tobytes())
    entry = {"file": "ours.bin", "tokens": int(ours.size), "docs": 3,
             "sha256": hashlib.sha256(ours.tobytes()).hexdigest()}
    read = [int(t) for t in sub.read_shard(os.path.dirname(theirs), entry)]
    try:
        sub.write_shards(docs, tempfile.mkdtemp(), shard_tokens, eos, 70_000)
        too_big = "accepted"
    except ValueError:
        too_big = "ValueError"
    return {"index": index, "raw": raw, "read": read, "too_big": too_big}


@LAB.check(points=2, grades="pretraining that streams a Common Crawl shard")
def token_shards(ctx: CheckContext):
    """write_shards lays hidden documents out as raw little-endian uint16 files, each document followed by
    the end-of-text id, the stream cut every shard_tokens tokens, and an index whose entries (file, tokens,
    docs, sha256) describe them; read_shard reads a shard written elsewhere; a vocabulary over
    65,536 ids is refused (ValueError)."""
    vocab = ctx.randint(300, 65_536)
    docs = [ctx.rng.integers(0, vocab - 1, ctx.randint(1, 200)).tolist() for _ in range(ctx.randint(6, 20))]
    eos, size = vocab - 1, ctx.randint(100, 600)
    got = ctx.run(probe_shards, docs, size, eos, vocab)
    folder = tempfile.mkdtemp()
    want = shards.write_shards(docs, folder, size, eos, vocab)
    entries = got["index"].get("splits", {}).get("train") if isinstance(got["index"], dict) else None
    ctx.expect(entries == want["splits"]["train"], f"the index's train shards are {entries}; want "
               f"{want['splits']['train']}")
    for e in want["splits"]["train"]:
        ctx.expect(got["raw"].get(e["file"]) == np.fromfile(os.path.join(folder, e["file"]), dtype="<u2").tolist(),
                   f"{e['file']} does not hold the documents' tokens, each followed by {eos}, as uint16 LE")
    ctx.expect(got["read"] == [t for d in docs[:3] for t in d + [eos]], "read_shard returned other tokens")
    ctx.expect(got["too_big"] == "ValueError", "a vocabulary of 70,000 ids must be refused (ValueError)")


def probe_log(sub, data, start):
    return [r.hex() for r in sub.log_records(data, start)]


@LAB.check(points=2, grades="experiment logging")
def experiment_log_records(ctx: CheckContext):
    """log_records(data, start) recovers hidden records from a W&B-style log (LevelDB framing: 32 KiB blocks,
    FULL/FIRST/MIDDLE/LAST chunks, block-tail padding), records from 0 bytes to 3 blocks long, the log
    starting at byte 0 or after a 7-byte file header, and leaves out a record cut off at the end."""
    from llmlab import tracking

    for start in (0, 7):
        sizes = [ctx.randint(0, 200) for _ in range(30)] + [32_768 - 7 - start, ctx.randint(33_000, 100_000), 0]
        records = [ctx.rng.bytes(n) for n in sizes]
        ctx.rng.shuffle(records)
        left = tracking.BLOCK - (start + len(tracking.frame_records(records, start))) % tracking.BLOCK
        records.append(ctx.rng.bytes(max(0, left - tracking.HEADER - ctx.randint(1, 7))))  # padding follows
        records.append(ctx.rng.bytes(ctx.randint(40, 200)))  # the last one, cut off below
        data = bytes(start) + tracking.frame_records(records, start)
        want = [r.hex() for r in records]
        got = ctx.run(probe_log, data, start)
        ctx.expect(isinstance(got, list) and got == want, f"log starting at byte {start}: "
                   f"{len(got) if isinstance(got, list) else got} records recovered; want {len(want)} "
                   "(or some differ)")
        got = ctx.run(probe_log, data[:len(data) - ctx.randint(1, 20)], start)
        ctx.expect(got == want[:-1], "a record cut off at the end of the data must be left out, the others kept")


# --- seeded bugs ---------------------------------------------------------------------------------------------
def gopher_counts_symbols(text: str, **kwargs):
    if len(quality.words(text)) < 50:  # punctuation and symbols counted as words
        return "too_few_words"
    return quality.gopher_quality(text, min_words=0)


def gopher_no_stop_words(text: str, **kwargs):
    return quality.gopher_quality(text, min_stop_words=0)


def repetition_overlapping(text: str, **kwargs):
    reason = quality.gopher_repetition(text, dup_ngram_max={})
    if reason:
        return reason
    ws = quality.words(text)
    for n, limit in quality.DUP_NGRAM_MAX.items():
        grams = ["".join(ws[i:i + n]) for i in range(len(ws) - n + 1)]
        seen, chars = set(), 0
        for g in grams:  # every later occurrence counted, windows overlapping
            chars += len(g) if g in seen else 0
            seen.add(g)
        if chars / len(text) > limit:
            return f"duplicated_{n}_grams"
    return None


def repetition_lines_unsplit(text: str, **kwargs):
    return quality.gopher_repetition(text.replace("\n", " ")) if text else "empty"


def normalize_keeps_case(text: str) -> str:
    import unicodedata

    text = unicodedata.normalize("NFKC", text)
    text = "".join(c for c in text if not unicodedata.category(c).startswith("P"))
    return re.sub(r"\s+", " ", text).strip()


def minhash_without_mod(hashes, a, b):
    x = np.asarray(hashes, dtype=np.uint64)
    return (np.outer(x, np.asarray(a, dtype=np.uint64)) + np.asarray(b, dtype=np.uint64)).min(axis=0)


def lsh_strided_bands(signatures, bands: int, rows: int):
    return dedup.lsh_candidates([np.asarray(s).reshape(rows, bands).T.flatten() for s in signatures], bands, rows)


def probability_swapped(s: float, bands: int, rows: int) -> float:
    return 1 - (1 - s**bands) ** rows


def pii_any_octet(text: str):
    text, counts = pii.mask_emails(text)
    text, phones = pii.mask_phone_numbers(text)
    text, ips = re.subn(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.]*\d)", pii.IP, text)
    return text, {"email": counts, "phone": phones, "ip": ips}


def shards_without_eos(docs, out_dir, shard_tokens, eos, vocab_size, split="train", meta=None):
    index = shards.write_shards(docs, out_dir, shard_tokens, eos, vocab_size, split, meta)
    for e in index["splits"][split]:  # rewrite each shard without the end-of-text ids
        path = Path(out_dir) / e["file"]
        arr = np.fromfile(path, dtype="<u2")
        path.write_bytes(arr[arr != eos].tobytes())
    return index


def read_shard_big_endian(shard_dir, entry, verify=False):
    return np.fromfile(Path(shard_dir) / entry["file"], dtype=">u2")


def log_records_blocks_from_log_start(data: bytes, start: int = 0):
    from llmlab.tracking import log_records

    return log_records(data[start:])  # blocks counted from the log, not from the file's first byte


LAB.bug("gopher_counts_symbols_as_words", gopher_quality=gopher_counts_symbols)
LAB.bug("gopher_without_stop_words", gopher_quality=gopher_no_stop_words)
LAB.bug("repeated_ngrams_overlap", gopher_repetition=repetition_overlapping)
LAB.bug("repetition_ignores_lines", gopher_repetition=repetition_lines_unsplit)
LAB.bug("dedup_case_sensitive", normalize=normalize_keeps_case)
LAB.bug("minhash_without_mod", minhash=minhash_without_mod)
LAB.bug("lsh_strided_bands", lsh_candidates=lsh_strided_bands)
LAB.bug("band_probability_swapped", candidate_probability=probability_swapped)
LAB.bug("ip_octets_over_255", mask_pii=pii_any_octet)
LAB.bug("shards_without_eos", write_shards=shards_without_eos)
LAB.bug("shard_read_big_endian", read_shard=read_shard_big_endian)
LAB.bug("log_blocks_from_log_start", log_records=log_records_blocks_from_log_start)


# --- deliverable ---------------------------------------------------------------------------------------------
def _extraction_section(out: Path) -> tuple[dict, str]:
    from llmlab.data import resolve
    from llmlab.pipeline import extract, warc

    pages = [(r.url, extract.decode_http(r.body)[2]) for name in ("CC-MAIN-2020-34-sample.warc.gz", "whirlwind.warc.gz")
             for r in warc.records(resolve(f"commoncrawl/{name}"), types=("response",))]
    extract.compare_extractors(pages[:1])  # warm-up: imports and first-call setup out of the timings
    rows = extract.compare_extractors(pages)
    ms = {e: sum(r[f"{e}_ms"] for r in rows) for e in extract.EXTRACTORS}
    with figure(out / "extraction.png", f"HTML to text on {len(rows)} Common Crawl pages", ncols=2) as (a, b):
        x = np.arange(len(rows))
        for i, e in enumerate(extract.EXTRACTORS):
            a.bar(x + (i - 0.5) * 0.4, [r[f"{e}_chars"] for r in rows], 0.4, label=e)
        a.set(xlabel="page", ylabel="characters of text")
        a.legend()
        b.hist([r["word_overlap"] for r in rows], bins=10, range=(0, 1))
        b.set(xlabel="word-set overlap of the two texts (Jaccard)", ylabel="pages")
    table = "\n".join(f"| {r['url'][:48]} | {r['html_chars']:,} | {r['resiliparse_chars']:,} | "
                      f"{r['trafilatura_chars']:,} | {r['resiliparse_lang']}/{r['trafilatura_lang']} | "
                      f"{r['word_overlap']:.2f} |" for r in rows)
    report = f"""
## HTML to text: resiliparse and trafilatura on the same {len(rows)} pages
The WARC samples' HTML responses (decoded with the declared charset, else resiliparse's detector).
resiliparse took {ms['resiliparse']:.0f} ms for all pages, trafilatura {ms['trafilatura']:.0f} ms
({ms['trafilatura'] / ms['resiliparse']:.0f}x); they agree on the language of
{sum(r['resiliparse_lang'] == r['trafilatura_lang'] for r in rows)} pages and share a median
{np.median([r['word_overlap'] for r in rows]):.2f} of their words: they cut boilerplate differently.

| page | HTML chars | resiliparse | trafilatura | language | overlap |
|---|---|---|---|---|---|
{table}

![extraction](extraction.png)
"""
    return {"extraction": rows, "extraction_ms": ms}, report


def _minhash_section(out: Path) -> tuple[dict, str]:
    """MinHash estimates against exact Jaccard on every pair of WET documents, and the banding S-curve."""
    from llmlab.data import resolve
    from llmlab.pipeline import warc

    docs = [r.text for r in warc.records(resolve("commoncrawl/CC-MAIN-2016-50-wet-00009-filtered25.warc.wet.gz"),
                                         types=("conversion",))]
    exact, est = dedup.minhash_accuracy(docs)
    _, groups = dedup.near_dedup(docs)
    s = np.linspace(0, 1, 101)
    with figure(out / "minhash.png", "MinHash (128 functions) on the 25 WET documents", ncols=2) as (a, b):
        a.scatter(exact, est, s=8)
        a.set(xlabel="exact Jaccard of 5-gram sets", ylabel="MinHash estimate")
        for bands in (8, 16, 32):
            b.plot(s, [dedup.candidate_probability(v, bands, 128 // bands) for v in s], label=f"{bands} bands")
        b.set(xlabel="Jaccard similarity s", ylabel="P(candidate) = 1 - (1 - s^r)^b")
        b.legend()
    err = float(np.abs(est - exact).max())
    report = f"""
## MinHash against exact Jaccard
All {len(exact)} pairs of the 25 WET documents: the 128-function estimate is within {err:.3f} of the exact
Jaccard similarity of their word 5-gram sets. MinHash-LSH (16 bands of 8 rows, threshold 0.8) finds
{len(groups)} group(s) of near duplicates ({[len(g) for g in groups]} documents): pages crawled more than once.

![minhash](minhash.png)
"""
    return {"minhash_max_abs_error": err, "near_duplicate_groups": groups}, report


def _pipeline_section(profile: str, out: Path) -> tuple[dict, str]:
    from llmlab.pipeline import run

    # the full profile also streams a whole Common Crawl WET file over HTTPS (about 150 MB, ~40k pages)
    cfg = run.PipelineConfig(sources=run.SAMPLES + ((run.CC_WET,) if profile == "full" else ()))
    rep = run.run(cfg, out / "data")
    rows = "\n".join(f"| {r['stage']} | {r['docs_in']} | {r['docs_out']} | {r['bytes_in']:,} | {r['bytes_out']:,} | "
                     + (", ".join(f"{k} {v}" for k, v in r["dropped"].items()) or "-") + " |" for r in rep["stages"])
    tox = rep["toxicity_classifier"]
    report = f"""
## From Common Crawl to token shards, on Ray Data
{len(cfg.sources)} files streamed ({', '.join(Path(s).name for s in cfg.sources)}); every stage a Ray Data
`map_batches` over documents, the dedup decision taken once over all documents' hashes and signatures.
The toxicity classifier (hashed word and character n-grams, logistic regression, trained by llmlab on
{tox['train']:,} Davidson et al. tweets) scores {tox['accuracy']:.3f} held-out accuracy against the majority
class's {tox['majority_accuracy']:.3f}, ROC AUC {tox['auc']:.3f}. PII masked in the kept text:
{rep['pii']}. The kept text trains a byte-level BPE of {cfg.vocab_size} ids and is written as
{rep['shards']['train']['shards']} training shards ({rep['shards']['train']['tokens']:,} tokens) and
{rep['shards']['val']['shards']} validation shard(s) ({rep['shards']['val']['tokens']:,} tokens) of uint16.

| stage | docs in | docs out | bytes in | bytes out | dropped (reason: documents) |
|---|---|---|---|---|---|
{rows}

![pipeline](data/pipeline.png)
"""
    return {"pipeline": rep}, report


def _training_section(profile: str, out: Path) -> tuple[dict, str]:
    from llmlab import tracking
    from llmlab.distributed.pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(data=str(out / "data"), engine="ddp", bf16=False, activation_checkpointing=False,
                         zero_stage=0, cpus_per_worker=0.5, steps=300 if profile == "full" else 60, lr=3e-3,
                         eval_every=20, wandb_project="llmlab-m17", name="m17-ddp")
    summary = pretrain(cfg, out / "train")
    hist = summary["history"]
    run_dir = next((out / "train" / "wandb").glob("offline-run-*"))
    logged = tracking.wandb_history(run_dir)
    same = [r["val_loss"] for r in logged] == [h["val_loss"] for h in hist]
    with figure(out / "ddp_training.png", f"DDP on Ray Train, {summary['world_size']} ranks, each streaming its "
                "own shards") as ax:
        ax.plot([h["tokens"] for h in hist], [h["train_loss"] for h in hist], "o-", label="train")
        ax.plot([h["tokens"] for h in hist], [h["val_loss"] for h in hist], "s-", label="validation")
        ax.set_xlabel("tokens")
        ax.set_ylabel("loss (nats/token)")
        ax.legend()
    report = f"""
## Pretraining on the shards: DDP on Ray Train, logged to Weights & Biases
{summary['world_size']} Ray Train workers (torch DistributedDataParallel over gloo), each reading only its own
training shards; a {summary['params'] / 1e6:.2f}M-parameter Llama-style model, {cfg.steps} steps:
validation loss {hist[0]['val_loss']:.3f} -> {hist[-1]['val_loss']:.3f}, {summary['tokens_per_s']:,.0f} tokens/s.
Rank 0 logged every evaluation to W&B in offline mode; the run file read back with `llmlab.tracking`
holds the same {len(logged)} rows ({'identical' if same else 'DIFFERENT'} losses). Upload it with
`wandb sync {run_dir.relative_to(out)}`.

![ddp](ddp_training.png)
"""
    return {"ddp": {"world_size": summary["world_size"], "params": summary["params"], "history": hist,
                    "tokens_per_s": summary["tokens_per_s"]}, "wandb_rows": len(logged), "wandb_matches": same,
            "wandb_run": str(run_dir.relative_to(out))}, report


def run(profile: str, out: Path) -> tuple[dict, str]:
    metrics, report = {}, ""
    for section in (_extraction_section, _minhash_section, lambda o: _pipeline_section(profile, o),
                    lambda o: _training_section(profile, o)):
        m, r = section(out)
        metrics |= m
        report += r
    return metrics, report
