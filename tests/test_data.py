"""The data manifest and `llmlab data list | verify | fetch`. No network here: downloads come from a loopback
HTTP server that serves the real files of shared/data, as a plain mirror and as the Hugging Face Hub's
`resolve` endpoint (the Hub client is pointed at it through HF_ENDPOINT); it can corrupt a file or cut a
transfer short."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llmlab.data import DataNotFound, catalog, resolve, shakespeare
from llmlab.labs import built_labs

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CLI = str(Path(sys.executable).with_name("llmlab"))


class _Server:
    """Serves SHARED over HTTP on 127.0.0.1 with Range requests; ``corrupt`` flips a byte of those paths,
    ``cut`` sends only that many bytes of a path once and then drops the connection. ``log`` records
    (method, path, Range header, bytes sent)."""

    def __init__(self):
        self.corrupt: set[str] = set()
        self.cut: dict[str, int] = {}
        self.log: list[tuple[str, str, str | None, int]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def _serve(self, body: bool):
                hub = re.match(r"/datasets/[^/]+/[^/]+/resolve/[^/]+/(.+)", self.path)
                rel = hub.group(1) if hub else self.path.lstrip("/")
                file = SHARED / rel
                if ".." in rel or not file.is_file():
                    self.send_error(404)
                    return
                data = file.read_bytes()
                if rel in server.corrupt:
                    data = data[:-1] + bytes([data[-1] ^ 1])
                rng = self.headers.get("Range")
                start = int(re.match(r"bytes=(\d+)-", rng).group(1)) if rng else 0
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Accept-Ranges", "bytes")
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                if hub:  # what the Hub's resolve endpoint tells its client
                    self.send_header("X-Repo-Commit", "c0ffee" * 6 + "c0ff")
                    self.send_header("ETag", f'"{catalog.sha256(file)}"')
                self.end_headers()
                if not body:
                    return
                payload = data[start:]
                cut = rel in server.cut
                if cut:
                    payload = payload[: server.cut.pop(rel)]
                server.log.append((self.command, rel, rng, len(payload)))  # before the client can see the end
                self.wfile.write(payload)
                if cut:
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    server = _Server()
    monkeypatch.setenv("LLMLAB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LLMLAB_DATA_MIRROR", server.url)
    yield server
    server.httpd.shutdown()


def test_manifest_describes_every_shared_file():
    """Every file of shared/data is in datasets.toml with its size and SHA-256 (and nothing else is)."""
    sums = dict(reversed(line.split()) for line in (SHARED / "SHA256SUMS").read_text().splitlines())
    files = {f.path: f for d in catalog.datasets().values() for f in d.files}
    assert set(files) == {p.removeprefix("./") for p in sums}
    for p, h in sums.items():
        f = files[p.removeprefix("./")]
        assert f.sha256 == h and f.size == (SHARED / f.path).stat().st_size
        assert f.url or f.derived  # a canonical source, or said to be built for llmlab
    used = {lab for d in catalog.datasets().values() for lab in d.used_by}
    assert {"m03", "m04", "m09", "m10", "m18"} <= used


def test_verify_the_shared_folder(monkeypatch):
    monkeypatch.setenv("LLMLAB_DATA_DIR", str(SHARED))
    r = subprocess.run([CLI, "data", "verify", "--all"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "all files verified" in r.stdout, r.stdout + r.stderr


def test_missing_data_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMLAB_DATA_DIR", str(tmp_path))
    with pytest.raises(DataNotFound, match=r"llmlab data fetch tinyshakespeare"):
        shakespeare.split()
    r = subprocess.run([CLI, "data", "verify", "wikitext-2"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "missing wikitext-2/wiki.test.tokens" in r.stdout


def test_fetch_from_a_mirror_verifies_and_is_idempotent(mirror):
    got = catalog.fetch(["tinyshakespeare", "wikitext-2"], progress=False)
    assert sorted(p.name for p in got) == ["input.txt", "wiki.test.tokens", "wiki.valid.tokens"]
    assert resolve("tinyshakespeare/input.txt").read_bytes() == (SHARED / "tinyshakespeare/input.txt").read_bytes()
    assert all(catalog.check(f)[0] == "ok" for f in catalog.get("wikitext-2").files)
    requests = len(mirror.log)
    assert catalog.fetch(["tinyshakespeare"], progress=False) == [] and len(mirror.log) == requests


def test_corrupted_download_is_refused_and_nothing_is_left(mirror):
    mirror.corrupt.add("wikitext-2/wiki.test.tokens")
    with pytest.raises(catalog.ChecksumMismatch, match="wiki.test.tokens"):
        catalog.fetch(["wikitext-2"], progress=False)
    folder = Path(os.environ["LLMLAB_DATA_DIR"]) / "wikitext-2"
    assert not (folder / "wiki.test.tokens").exists() and not list(folder.glob("*.part"))
    mirror.corrupt.clear()
    catalog.fetch(["wikitext-2"], progress=False)  # a good copy later lands
    assert all(catalog.check(f)[0] == "ok" for f in catalog.get("wikitext-2").files)


def test_interrupted_download_resumes(mirror):
    f = catalog.get("tinyshakespeare").files[0]
    mirror.cut[f.path] = 400_000
    with pytest.raises(catalog.FetchError, match="interrupted after 400000 of 1115394 bytes"):
        catalog.fetch(["tinyshakespeare"], progress=False)
    part = Path(os.environ["LLMLAB_DATA_DIR"]) / (f.path + ".part")
    assert part.stat().st_size == 400_000 and catalog.check(f)[0] == "missing"
    catalog.fetch(["tinyshakespeare"], progress=False)
    assert mirror.log[-1] == ("GET", f.path, "bytes=400000-", f.size - 400_000)  # only the rest was sent
    assert catalog.check(f)[0] == "ok" and not part.exists()


def test_derived_files_need_a_mirror(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMLAB_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("LLMLAB_DATA_MIRROR", raising=False)
    monkeypatch.delenv("LLMLAB_DATA_HUB_REPO", raising=False)
    with pytest.raises(catalog.FetchError, match="LLMLAB_DATA_MIRROR or LLMLAB_DATA_HUB_REPO"):
        catalog.fetch(["cifar-tiny"], progress=False)


def test_fetch_through_the_hub_client(mirror, tmp_path):
    """`llmlab data fetch --hub-repo` downloads with huggingface_hub (HF_ENDPOINT: the loopback server)."""
    env = {**os.environ, "HF_ENDPOINT": mirror.url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0",
           "LLMLAB_DATA_MIRROR": ""}
    r = subprocess.run([CLI, "data", "fetch", "tinystories", "--hub-repo", "llmlab/course-data"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "fetched 3 file(s)" in r.stdout
    assert {rel for m, rel, _, _ in mirror.log if m == "GET"} == {f.path for f in catalog.get("tinystories").files}
    assert all(catalog.check(f)[0] == "ok" for f in catalog.get("tinystories").files)
    assert list((tmp_path / "hf").rglob("tinystories_valid_head.txt"))  # through the Hub's own cache


def test_make_run_fetches_what_the_labs_need(mirror):
    """`llmlab run` calls ensure() first: on an empty data folder it fetches the built labs' sets (here
    just m03's, to keep the test small)."""
    got = catalog.ensure(["m03"], progress=False)
    assert {p.name for p in got} == {"wiki.test.tokens", "wiki.valid.tokens"}
    assert {d.name for d in catalog.for_labs(built_labs())} >= {"tinyshakespeare", "wikitext-2", "cifar-tiny"}
