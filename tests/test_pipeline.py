"""The WARC/WET stream reader (lab m17's first stage) on the real Common Crawl samples in shared/data:
record counts as the data manifest states them, records identical to warcio's where warcio can read the
file, a truncated WET file read to its last complete record with the cut one reported, and streaming from
a loopback HTTP server that holds back the rest of the file until the first record has been yielded."""

from __future__ import annotations

import gzip
import http.server
import threading
from collections import Counter
from pathlib import Path

import pytest

from llmlab.pipeline import warc

CC = Path(__file__).resolve().parents[2] / "shared" / "data" / "commoncrawl"
TRUNCATED = "CC-MAIN-2016-50-wet-00009-head51200.warc.wet.gz"
SINGLE_MEMBER = "CC-MAIN-2016-50-wet-00009-filtered25.warc.wet.gz"
WARC_SAMPLE = "CC-MAIN-2020-34-sample.warc.gz"


@pytest.mark.parametrize("name, counts", [
    (WARC_SAMPLE, {"warcinfo": 1, "request": 17, "response": 16, "metadata": 16}),
    (SINGLE_MEMBER, {"warcinfo": 1, "conversion": 25}),
    (TRUNCATED, {"warcinfo": 1, "conversion": 15}),
    ("whirlwind.warc.gz", {"warcinfo": 1, "request": 1, "response": 1, "metadata": 1}),
    ("whirlwind.warc.wet.gz", {"warcinfo": 1, "conversion": 1}),
])
def test_record_counts_match_the_data_manifest(name, counts):
    report = warc.ReadReport()
    recs = list(warc.records(CC / name, report, chunk=4096))
    assert Counter(r.type for r in recs) == counts and report.records == sum(counts.values()) and not report.errors
    if name == TRUNCATED:  # the manifest: URLs 003.su to 08.od.ua, then a cut conversion record (3,479 of 7,758)
        cut = report.truncated
        assert (cut["type"], cut["body_bytes"], cut["content_length"]) == ("conversion", 3479, 7758)
        assert recs[1].url.startswith("http://003.su") and recs[-1].url.startswith("http://08.od.ua")
        assert cut["headers"]["WARC-Target-URI"] > recs[-1].url  # URL-sorted: the next one
    else:
        assert report.truncated is None


@pytest.mark.parametrize("name", [WARC_SAMPLE, "whirlwind.warc.gz", "whirlwind.warc.wet.gz",
                                  "whirlwind.warc.wat.gz", TRUNCATED])
def test_records_equal_warcios(name):
    """warcio's ArchiveIterator as the reference: same types, ids, URLs and record blocks, byte for byte
    (on the truncated file warcio also yields the cut record as if it were whole; llmlab reports it)."""
    from warcio.archiveiterator import ArchiveIterator

    with open(CC / name, "rb") as f:
        theirs = [(r.rec_type, r.rec_headers.get_header("WARC-Record-ID"), r.rec_headers.get_header("WARC-Target-URI"),
                   r.raw_stream.read()) for r in ArchiveIterator(f, no_record_parse=True)]
    ours = [(r.type, r.headers["WARC-Record-ID"], r.url, r.body) for r in warc.records(CC / name)]
    assert ours == theirs[:len(ours)]
    assert len(theirs) - len(ours) == (1 if name == TRUNCATED else 0)


def test_warcio_refuses_the_single_member_file_that_llmlab_reads():
    from warcio.archiveiterator import ArchiveIterator
    from warcio.exceptions import ArchiveLoadFailed

    with open(CC / SINGLE_MEMBER, "rb") as f, pytest.raises(ArchiveLoadFailed):
        for r in ArchiveIterator(f):
            r.content_stream().read()
    texts = [r.text for r in warc.records(CC / SINGLE_MEMBER, types=("conversion",))]
    assert len(texts) == 25 and sum(len(t.split()) for t in texts) > 40_000  # the manifest: 48,822 words


def test_garbage_between_records_is_reported_and_skipped(tmp_path):
    data = (CC / "whirlwind.warc.wet.gz").read_bytes()
    path = tmp_path / "mixed.wet.gz"
    path.write_bytes(gzip.compress(b"this is not a WARC record\r\n\r\n") + data)
    report = warc.ReadReport()
    assert [r.type for r in warc.records(path, report)] == ["warcinfo", "conversion"]
    assert report.errors and "not a WARC record" in report.errors[0]


class _SlowServer(http.server.BaseHTTPRequestHandler):
    """Serves a file in two parts: the first 8 KiB, then (after the test says so) the rest."""
    release = threading.Event()

    def do_GET(self):
        path = CC / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[:8192])
        self.wfile.flush()
        self.release.wait(timeout=30)
        self.wfile.write(data[8192:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _SlowServer.release.clear()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowServer)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    _SlowServer.release.set()
    httpd.shutdown()


def test_streams_a_url_without_downloading_it_first(server):
    """The first record comes out while the server still holds back everything after the first 8 KiB."""
    stream = warc.records(f"{server}/{WARC_SAMPLE}", chunk=1024)
    first = next(stream)
    assert first.type == "warcinfo" and not _SlowServer.release.is_set()
    _SlowServer.release.set()
    assert 1 + sum(1 for _ in stream) == 50


def test_truncated_file_over_http_keeps_complete_records(server):
    _SlowServer.release.set()
    report = warc.ReadReport()
    assert sum(1 for _ in warc.records(f"{server}/{TRUNCATED}", report)) == 16
    assert report.truncated["body_bytes"] == 3479 and report.bytes_in == 51200


def test_missing_url_is_a_clear_error(server):
    import httpx

    _SlowServer.release.set()
    with pytest.raises(httpx.HTTPStatusError, match="404"):
        list(warc.records(f"{server}/nope.warc.gz"))


# --- deduplication and PII (llmlab.pipeline.dedup, llmlab.pipeline.pii) ------------------------------------
def _wet_texts() -> list[str]:
    return [r.text for r in warc.records(CC / SINGLE_MEMBER, types=("conversion",))]


def _edit(words: list[str], k: int, rng) -> list[str]:
    out = list(words)
    for _ in range(k):
        out[rng.randrange(len(out))] = f"edit{rng.randrange(10**6)}"
    return out


def test_minhash_estimates_exact_jaccard():
    """Over 150 pairs spanning Jaccard 0-1: every estimate within 4 standard errors sqrt(J(1-J)/k) (+1/k) of
    the exact Jaccard similarity of the 5-gram sets, and no bias (mean error below 0.01)."""
    import random

    import numpy as np

    from llmlab.pipeline import dedup

    rng, mh, k = random.Random(0), dedup.MinHash(256, seed=1), 256
    text = " ".join(_wet_texts()).split()[:600]
    errors = []
    for _ in range(150):
        other = _edit(text, rng.randint(0, 600), rng)
        a, b = dedup.shingles(" ".join(text)), dedup.shingles(" ".join(other))
        J = dedup.jaccard(a, b)
        err = dedup.estimate_jaccard(mh.signature(a), mh.signature(b)) - J
        assert abs(err) <= 4 * (J * (1 - J) / k) ** 0.5 + 1 / k, (J, err)
        errors.append(err)
    assert abs(np.mean(errors)) < 0.01


def test_lsh_candidate_rate_follows_the_s_curve():
    """The fraction of pairs LSH proposes equals the mean of 1 - (1 - s^r)^b over the pairs (4 binomial
    standard errors), on either side of the threshold."""
    import random

    from llmlab.pipeline import dedup

    rng = random.Random(2)
    text = " ".join(_wet_texts()).split()[:300]
    for edits in (3, 12, 25):
        pairs = [(" ".join(_edit(text, edits, rng)), " ".join(_edit(text, edits, rng))) for _ in range(200)]
        bands, rows, hits, expected, var = 16, 8, 0, 0.0, 0.0
        for seed, (a, b) in enumerate(pairs):
            mh = dedup.MinHash(bands * rows, seed=seed)
            sa, sb = dedup.shingles(a), dedup.shingles(b)
            p = dedup.candidate_probability(dedup.jaccard(sa, sb), bands, rows)
            hits += bool(dedup.lsh_candidates([mh.signature(sa), mh.signature(sb)], bands, rows))
            expected, var = expected + p, var + p * (1 - p)
        assert abs(hits - expected) <= 4 * var**0.5 + 1, (edits, hits, expected)


def test_near_dedup_groups_equal_exact_jaccard_groups():
    """The 25 real WET documents (three of which are the same page under three URLs) and near copies of 8
    of them (2% of words edited): MinHash-LSH's groups are the groups of exact Jaccard >= 0.7 (every pair
    here is either >= 0.9 or <= 0.3, so the estimate's noise cannot move a pair across)."""
    import random

    from llmlab.pipeline import dedup

    rng = random.Random(3)
    docs = _wet_texts()
    long = [i for i, d in enumerate(docs) if len(d.split()) > 300][:8]
    docs += [" ".join(_edit(docs[i].split(), len(docs[i].split()) // 50, rng)) for i in long]
    sets = [dedup.shingles(d) for d in docs]
    exact = {}
    for i in range(len(docs)):
        group = next((g for g in exact.values() if any(dedup.jaccard(sets[i], sets[j]) >= 0.7 for j in g)), None)
        (group if group is not None else exact.setdefault(i, [])).append(i)
    want = sorted(g for g in exact.values() if len(g) > 1)
    assert [19, 20, 21] in want and len(want) == 9
    kept, groups = dedup.near_dedup(docs, threshold=0.7)
    assert sorted(sorted(g) for g in groups) == want
    assert kept == sorted(g[0] for g in exact.values())
    assert dedup.exact_dedup(["A, b.", "a  B", "c"]) == [0, 2]
    assert dedup.dedup_lines(["x\ny", "y\nz\n\n"]) == (["x\ny", "z\n\n"], 1)


@pytest.mark.parametrize("text, masked, counts", [
    ("write to jane.doe+news@mail.example.org today", "write to |||EMAIL_ADDRESS||| today", (1, 0, 0)),
    ("call (555) 123-4567 or 555.123.4567 or +1 555 123 4567", "call |||PHONE_NUMBER||| or |||PHONE_NUMBER||| or "
     "|||PHONE_NUMBER|||", (0, 3, 0)),
    ("London: +44 20 7946 0958.", "London: |||PHONE_NUMBER|||.", (0, 1, 0)),
    ("host 192.168.0.1, gateway 10.0.0.255.", "host |||IP_ADDRESS|||, gateway |||IP_ADDRESS|||.", (0, 0, 2)),
    ("version v2.10.3.1, 999.1.1.1, 1.2.3.4.5, year 2024, 12345", "version v2.10.3.1, 999.1.1.1, 1.2.3.4.5, year "
     "2024, 12345", (0, 0, 0)),
])
def test_pii_masking(text, masked, counts):
    from llmlab.pipeline import pii

    got, n = pii.mask_pii(text)
    assert got == masked and (n["email"], n["phone"], n["ip"]) == counts


def test_ip_masking_agrees_with_the_ipaddress_module():
    """Random dotted quads (octets 0-299, some with leading zeros): masked exactly when Python's ipaddress
    accepts them as IPv4."""
    import ipaddress
    import random

    from llmlab.pipeline import pii

    rng = random.Random(4)
    for _ in range(2000):
        quad = ".".join(rng.choice([str(rng.randint(0, 299)), f"0{rng.randint(0, 99)}"]) for _ in range(4))
        try:
            valid = ipaddress.ip_address(quad).version == 4
        except ValueError:
            valid = False
        assert (pii.mask_ips(f"at {quad} now")[1] == 1) == valid, quad
