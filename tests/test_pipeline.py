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
