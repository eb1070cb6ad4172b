"""The grading service answers every input with a status, never a crash: hostile uploads, names, keys,
links and methods; bounded bodies and metric labels; expiring, rotating tokens; and a schemathesis run over
its OpenAPI with a learner's and an instructor's token that finds no 5xx.

Grading itself is not under test here (test_grader_service.py runs it on a real Ray head): the backend
only records what it was asked to dispatch, so that hundreds of generated requests cost no Ray jobs.
"""

from __future__ import annotations

import io
import socket
import struct
import threading
import time
import zipfile

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from llmlab.platform.submissions import Poll
from services.grader.app import create_app
from services.grader.settings import GraderSettings
from tests.conftest import free_port, m01_source, serve_grader

SOURCE = m01_source().encode()


class RecordingBackend:
    """Accepts every dispatch and leaves it running (no Ray here; see the module docstring)."""

    def __init__(self):
        self.dispatched: list[str] = []

    def dispatch(self, job_id, submission_id, lab, path, learner):
        self.dispatched.append(submission_id)

    def poll(self, job_id):
        return Poll("running")


@pytest.fixture
def service(tmp_path):
    cfg = GraderSettings(database_url=f"sqlite:///{tmp_path / 'g.sqlite'}", files_dir=tmp_path / "files",
                         max_upload_bytes=256 * 1024, rate_limit_per_minute=1000, reconcile_interval_s=0.2)
    app = create_app(cfg, backend=RecordingBackend())
    store = app.state.store
    tokens = {"prof": store.add_learner("prof", "instructor"), "ana": store.add_learner("ana")}
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, tokens, tmp_path / "files"


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def _zip(entries: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as z:
        for name, body in entries.items():
            z.writestr(zipfile.ZipInfo(name), body, compress_type=method)
    return buf.getvalue()


def _lying_sizes(data: bytes) -> bytes:
    """Every header (local and central) claims the entry is 10 bytes long."""
    out = bytearray(data)
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        i = out.find(sig)
        while i >= 0:
            out[i + offset:i + offset + 4] = struct.pack("<I", 10)
            i = out.find(sig, i + 4)
    return bytes(out)


def _corrupt(data: bytes, needle: bytes) -> bytes:
    i = data.find(needle)
    return data[:i] + bytes(b ^ 0xFF for b in data[i:i + 8]) + data[i + 8:]


BAD_ZIPS = {
    "lying-sizes": _lying_sizes(_zip({"submission.py": b"x = 1\n" * 500})),
    "bad-crc": _corrupt(_zip({"submission.py": b"print('hello world') # " * 40}, zipfile.ZIP_STORED), b"hello"),
    "corrupt-deflate": _zip({"submission.py": b"y = 2\n" * 400})[:60] + b"\xff" * 40
                       + _zip({"submission.py": b"y = 2\n" * 400})[100:],
    "absolute-and-relative": _zip({"/abs.py": b"a = 1\n", "rel/submission.py": b"b = 2\n"}),
    "dot-dot": _zip({"pkg/../../escape.py": b"c = 3\n", "pkg/submission.py": b""}),
    "backslash": _zip({"pkg\\..\\evil.py": b"", "submission.py": b""}),
    "not-a-zip": b"PK\x03\x04 this is not a zip at all",
    "empty-zip": _zip({}),
}


@pytest.mark.parametrize("kind", BAD_ZIPS)
def test_hostile_zips_are_refused_and_leave_nothing(service, kind):
    client, tok, files = service
    r = client.post("/v1/submissions", data={"lab": "m01"}, files={"file": ("w.zip", BAD_ZIPS[kind])},
                    headers=auth(tok["ana"]))
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert not any(files.iterdir()), list(files.iterdir())  # no orphaned upload folder


def test_a_good_zip_is_taken(service):
    client, tok, _ = service
    body = _zip({"work/submission.py": SOURCE, "work/helpers.py": b"X = 1\n"})
    r = client.post("/v1/submissions", data={"lab": "m01"}, files={"file": ("w.zip", body)}, headers=auth(tok["ana"]))
    assert r.status_code == 202, r.text


@pytest.mark.parametrize("name", ["", "\x00", "a/b", "ana ", " ana", "\u0430na", "x" * 64, "ana\n", "-ana", "ANA"])
def test_learner_names_are_validated(service, name):
    client, tok, _ = service
    r = client.post("/v1/learners", json={"name": name}, headers=auth(tok["prof"]))
    assert r.status_code in (409, 422), (name, r.status_code, r.text)  # "ANA" is "ana", who exists


def test_names_are_nfkc_folded_and_unique_case_insensitively(service):
    client, tok, _ = service
    r = client.post("/v1/learners", json={"name": "\uff42\uff45\uff4e2"}, headers=auth(tok["prof"]))  # fullwidth
    assert r.status_code == 201 and r.json()["name"] == "ben2"
    assert client.post("/v1/learners", json={"name": "Ben2"}, headers=auth(tok["prof"])).status_code == 409
    assert client.get("/v1/gradebook", headers=auth(r.json()["token"])).status_code == 200


def test_unknown_learners_and_bounded_limits(service):
    client, tok, _ = service
    h = auth(tok["prof"])
    assert client.delete("/v1/learners/nobody/tokens", headers=h).status_code == 404
    assert client.delete("/v1/learners/a%2Fb/tokens", headers=h).status_code == 404
    assert client.post("/v1/learners/nobody/tokens", headers=h).status_code == 404
    for limit in ("1e20", "100000000000000000000", "0", "-1", "1001"):
        assert client.get(f"/v1/submissions?limit={limit}", headers=h).status_code == 422, limit


def test_idempotency_key_is_bound_to_its_request(service):
    client, tok, _ = service
    h = {**auth(tok["ana"]), "Idempotency-Key": "k-1"}
    first = client.post("/v1/submissions", data={"lab": "m01"}, files={"file": ("a.py", SOURCE)}, headers=h)
    again = client.post("/v1/submissions", data={"lab": "m01"}, files={"file": ("a.py", SOURCE)}, headers=h)
    assert first.status_code == again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    other_lab = client.post("/v1/submissions", data={"lab": "m02"}, files={"file": ("a.py", SOURCE)}, headers=h)
    other_file = client.post("/v1/submissions", data={"lab": "m01"}, files={"file": ("a.py", b"x = 1\n")}, headers=h)
    assert other_lab.status_code == other_file.status_code == 422
    odd = client.post("/v1/submissions", data={"lab": "m01"}, files={"file": ("a.py", SOURCE)},
                      headers={**auth(tok["ana"]), "Idempotency-Key": "x" * 200})
    assert odd.status_code == 400


@pytest.mark.parametrize("query", ["expires=1&sig=%C3%A9%C3%A9", "expires=99999999999999999999999&sig=abc",
                                   f"expires={2**62}&sig={'a' * 64}", "expires=-5&sig=", "expires=x&sig=y"])
def test_source_links_with_garbage_are_refused(service, query):
    client, _, _ = service
    assert client.get(f"/v1/sources/abc.zip?{query}").status_code in (403, 422)


def test_tokens_expire_and_rotate(tmp_path):
    cfg = GraderSettings(database_url=f"sqlite:///{tmp_path / 'g.sqlite'}", files_dir=tmp_path / "files",
                         token_ttl_days=0)
    app = create_app(cfg, backend=RecordingBackend())
    expired = app.state.store.add_learner("old")
    with TestClient(app) as client:
        assert client.get("/v1/gradebook", headers=auth(expired)).status_code == 401
    app = create_app(cfg.model_copy(update={"token_ttl_days": 30}), backend=RecordingBackend())
    with TestClient(app) as client:
        first = app.state.store.issue_token("old")
        assert client.get("/v1/gradebook", headers=auth(first)).status_code == 200
        r = client.post("/v1/tokens/rotate", headers=auth(first))
        assert r.status_code == 201
        assert client.get("/v1/gradebook", headers=auth(first)).status_code == 401
        assert client.get("/v1/gradebook", headers=auth(r.json()["token"])).status_code == 200


def test_invented_methods_do_not_grow_the_metrics(service):
    client, _, _ = service
    for method in ("FOO", "BAR", "PURGE", "X" * 50):
        client.request(method, "/health")
    metrics = client.get("/metrics").text
    assert 'method="OTHER"' in metrics and "FOO" not in metrics and "PURGE" not in metrics


def test_unpacking_runs_off_the_event_loop(service, monkeypatch):
    """A slow unpack (a big zip, a slow disk) must not stall the service: /health answers meanwhile."""
    import llmlab.platform.submissions as submissions

    client, tok, _ = service
    real = submissions.unpack
    monkeypatch.setattr(submissions, "unpack", lambda *a, **k: (time.sleep(3), real(*a, **k))[1])
    upload = threading.Thread(target=lambda: client.post("/v1/submissions", data={"lab": "m01"},
                                                          files={"file": ("a.py", SOURCE)}, headers=auth(tok["ana"])))
    upload.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    assert client.get("/health").status_code == 200
    waited = time.monotonic() - t0
    upload.join()
    assert waited < 2.0, f"/health waited {waited:.1f}s behind an upload"


def _raw(port: int, request: bytes, timeout: float = 10) -> tuple[str, float]:
    """Send a request's head (and no body) on a raw socket; the status line and how long it took."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        t0 = time.monotonic()
        s.sendall(request)
        line = s.makefile("rb").readline().decode()
        return line, time.monotonic() - t0


def test_body_limits_and_auth_come_before_the_body(tmp_path):
    """A real server: a 300 MB upload is answered (401 without a token, 413 with one) from its headers alone,
    while the client has sent none of the body."""
    import os

    from llmlab.platform.submissions import Store

    port = free_port()
    env = {**os.environ, "LLMLAB_GRADER_DATABASE_URL": f"sqlite:///{tmp_path / 'g.sqlite'}",
           "LLMLAB_GRADER_FILES_DIR": str(tmp_path / "files"), "LLMLAB_GRADER_RAY_ADDRESS": "http://127.0.0.1:9"}
    token = Store(env["LLMLAB_GRADER_DATABASE_URL"], tmp_path / "files").add_learner("ana")
    proc = serve_grader(port, env)
    try:
        head = (b"POST /v1/submissions HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                b"Content-Length: 314572800\r\n")
        line, seconds = _raw(port, head + b"\r\n")
        assert " 401 " in line and seconds < 5
        line, seconds = _raw(port, head + f"Authorization: Bearer {token}\r\n\r\n".encode())
        assert " 413 " in line and seconds < 5
        chunked = (b"POST /v1/submissions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                   b"Content-Type: multipart/form-data; boundary=b\r\n"
                   + f"Authorization: Bearer {token}\r\n\r\n".encode())
        part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.py"\r\n\r\n'
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            s.sendall(chunked + f"{len(part):x}\r\n".encode() + part + b"\r\n")
            chunk = b"x" * 65536
            try:
                for _ in range(200):  # 13 MB, over the 2 MB limit: refused as it grows
                    s.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            except OSError:
                pass  # the server answered and closed
            assert " 413 " in s.makefile("rb").readline().decode()
    finally:
        proc.kill()
        proc.wait()


def _fuzz_target():
    """The app schemathesis drives (built at import: parametrize needs its schema at collection)."""
    import tempfile
    from pathlib import Path

    import schemathesis

    tmp = Path(tempfile.mkdtemp(prefix="llmlab-fuzz-"))
    cfg = GraderSettings(database_url=f"sqlite:///{tmp / 'g.sqlite'}", files_dir=tmp / "files",
                         max_upload_bytes=64 * 1024, rate_limit_per_minute=100_000)
    app = create_app(cfg, backend=RecordingBackend())
    tokens = {"learner": app.state.store.add_learner("fuzz"),
              "instructor": app.state.store.add_learner("fuzzprof", "instructor")}
    return schemathesis.openapi.from_asgi("/openapi.json", app), tokens


SCHEMA, FUZZ_TOKENS = _fuzz_target()


@pytest.mark.parametrize("role", ["learner", "instructor"])
@SCHEMA.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_5xx_over_the_openapi(case, role):
    """schemathesis over every operation of the OpenAPI, as a learner and as an instructor: no 5xx."""
    response = case.call(headers=auth(FUZZ_TOKENS[role]))
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
