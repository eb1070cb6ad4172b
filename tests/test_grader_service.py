"""The grading service over a real local Ray head: API, roles, limits, idempotency, and nothing lost when
the service is killed with SIGKILL in the middle of grading."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from llmlab.contracts import CourseGrade
from services.grader.app import create_app
from services.grader.settings import GraderSettings
from tests.conftest import free_port, m01_source, serve_grader

pytestmark = pytest.mark.ray
REFERENCE = m01_source().encode()


@pytest.fixture
def service(ray_address, tmp_path):
    settings = GraderSettings(database_url=f"sqlite:///{tmp_path / 'g.sqlite'}", files_dir=tmp_path / "files",
                              ray_address=ray_address, rate_limit_per_minute=5, max_upload_bytes=64 * 1024,
                              reconcile_interval_s=0.3)
    app = create_app(settings)
    store = app.state.store
    tokens = {"prof": store.add_learner("prof", "instructor"), "ana": store.add_learner("ana"),
              "ben": store.add_learner("ben")}
    with TestClient(app) as client:
        yield client, tokens, tmp_path


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def wait_graded(client, sid: str, token: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sub = client.get(f"/v1/submissions/{sid}", headers=auth(token)).json()
        if sub["state"] in ("graded", "failed"):
            return sub
        time.sleep(0.5)
    raise AssertionError(f"submission {sid} not graded in {timeout}s: {sub}")


@pytest.mark.sandbox
def test_submit_grade_and_roles(service):
    client, tok, tmp_path = service
    assert client.post("/v1/submissions", data={"lab": "m01"}, files={"file": ("a.py", REFERENCE)}).status_code == 401
    assert client.get("/v1/gradebook", headers=auth("llm_wrong")).status_code == 401
    r = client.post("/v1/submissions", data={"lab": "m01"}, files={"file": ("mine.py", REFERENCE)},
                    headers=auth(tok["ana"]))
    assert r.status_code == 202 and r.headers["Location"] == f"/v1/submissions/{r.json()['id']}"
    sub = wait_graded(client, r.json()["id"], tok["ana"])
    assert sub["state"] == "graded" and sub["score"] == sub["max_score"] == 14
    assert sub["result"]["learner"] == "ana" and sub["result"]["lab"] == "m01"
    # learners see only their own; instructors see all
    assert client.get(f"/v1/submissions/{sub['id']}", headers=auth(tok["ben"])).status_code == 404
    assert client.get(f"/v1/submissions/{sub['id']}", headers=auth(tok["prof"])).status_code == 200
    assert client.get("/v1/submissions", headers=auth(tok["ben"])).json() == []
    book = client.get("/v1/gradebook", headers=auth(tok["ana"])).json()
    assert len(book) == 1 and book[0]["labs"][0]["best"] == 14 and book[0]["components"]["quiz"]["status"] == "pending"
    assert {b["learner"] for b in client.get("/v1/gradebook", headers=auth(tok["prof"])).json()} == {"prof", "ana",
                                                                                                     "ben"}
    metrics = client.get("/metrics").text
    assert 'llmlab_submissions_total{lab="m01",outcome="graded"} 1.0' in metrics
    assert "llmlab_grading_duration_seconds_bucket" in metrics and "llmlab_grading_queue_depth 0.0" in metrics
    # tokens are stored hashed
    with sqlite3.connect(tmp_path / "g.sqlite") as db:
        stored = [row[0] for row in db.execute("SELECT token_sha256 FROM tokens")]
    assert tok["ana"] not in stored and len(stored) == 3


def test_instructors_manage_learners(service):
    client, tok, _ = service
    assert client.post("/v1/learners", json={"name": "cy"}, headers=auth(tok["ana"])).status_code == 403
    r = client.post("/v1/learners", json={"name": "cy"}, headers=auth(tok["prof"]))
    assert r.status_code == 201
    cy = r.json()["token"]
    assert client.get("/v1/gradebook", headers=auth(cy)).status_code == 200
    assert client.post("/v1/learners", json={"name": "cy"}, headers=auth(tok["prof"])).status_code == 409
    assert client.delete("/v1/learners/cy/tokens", headers=auth(tok["prof"])).json()["revoked"] == 1
    assert client.get("/v1/gradebook", headers=auth(cy)).status_code == 401


def test_limits_idempotency_and_bad_uploads(service):
    client, tok, _ = service
    h = auth(tok["ben"])
    post = lambda name, data, lab="m01", **kw: client.post("/v1/submissions", data={"lab": lab},
                                                           files={"file": (name, data)}, headers={**h, **kw})
    assert post("big.py", b"#" * (65 * 1024)).status_code == 413
    bad = post("a.py", REFERENCE, lab="m42")  # not a lab id at all: the form's pattern refuses it
    assert bad.status_code == 422 and "pattern" in bad.text
    assert post("notes.txt", b"hello").status_code == 415
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../../escape.py", "x = 1")
        z.writestr("submission.py", "x = 1")
    assert post("evil.zip", evil.getvalue()).status_code == 400
    first = post("a.py", REFERENCE, **{"Idempotency-Key": "k1"})
    again = post("a.py", REFERENCE, **{"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 202 and first.json()["id"] == again.json()["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    for _ in range(5):
        last = post("a.py", REFERENCE)
    assert last.status_code == 429 and last.headers["Retry-After"] == "60"
    assert len(client.get("/v1/submissions", headers=h).json()) == 5  # the limit: 5 a minute


@pytest.mark.sandbox
def test_folder_upload_as_zip(service):
    client, tok, _ = service
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("mywork/helpers.py", "def helper_bilinear(x, W, y):\n    return ((x @ W) * y).sum(-1)\n")
        z.writestr("mywork/submission.py", m01_source(extra="\nfrom helpers import helper_bilinear as bilinear\n"))
    r = client.post("/v1/submissions", data={"lab": "m01"}, files={"file": ("mywork.zip", buf.getvalue())},
                    headers=auth(tok["ana"]))
    assert r.status_code == 202, r.text
    sub = wait_graded(client, r.json()["id"], tok["ana"])
    assert sub["score"] == 14, sub


@pytest.mark.sandbox
def test_nothing_lost_when_killed_mid_grading(ray_address, tmp_path):
    """SIGKILL the service while its Ray job grades; on restart the reconciler lands the result."""
    env = {**os.environ, "LLMLAB_GRADER_DATABASE_URL": f"sqlite:///{tmp_path / 'g.sqlite'}",
           "LLMLAB_GRADER_FILES_DIR": str(tmp_path / "files"), "LLMLAB_GRADER_RAY_ADDRESS": ray_address,
           "LLMLAB_GRADER_RECONCILE_INTERVAL_S": "0.3"}
    cli = str(Path(sys.executable).with_name("llmlab"))
    token = subprocess.run([cli, "learners", "add", "dee"], env=env, capture_output=True, text=True,
                           check=True).stdout.strip()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = serve_grader(port, env)
    try:
        r = httpx.post(f"{base}/v1/submissions", data={"lab": "m01"}, files={"file": ("m.py", REFERENCE)},
                       headers=auth(token))
        assert r.status_code == 202
        sid = r.json()["id"]
        deadline = time.monotonic() + 120  # a loaded machine starts Ray jobs slowly
        while time.monotonic() < deadline:
            state = httpx.get(f"{base}/v1/submissions/{sid}", headers=auth(token)).json()["state"]
            if state == "running":
                break
            time.sleep(0.1)
        assert state == "running"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(2)
        proc = serve_grader(port, env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            sub = httpx.get(f"{base}/v1/submissions/{sid}", headers=auth(token)).json()
            if sub["state"] in ("graded", "failed"):
                break
            time.sleep(0.5)
        assert sub["state"] == "graded" and sub["score"] == 14, sub
        # the CLI against the service: same table/result as `llmlab grade`
        sub_file = tmp_path / "bug.py"
        sub_file.write_text(m01_source("svd_ascending"))
        r = subprocess.run([cli, "submit", "m01", str(sub_file), "--server", base, "--token", token, "--json"],
                           env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert '"score": 5.0' in r.stdout
        # one gradebook: `llmlab gradebook --server` shows the grades earned through the service
        r = subprocess.run([cli, "gradebook", "--server", base, "--token", token, "--json"], env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        (book,) = [CourseGrade.model_validate(b) for b in json.loads(r.stdout)]
        assert book.learner == "dee" and [(g.lab, g.best, g.attempts) for g in book.labs] == [("m01", 14, 2)]
        assert book.components["lab"].score == pytest.approx(1.0) and book.components["quiz"].status == "pending"
        r = subprocess.run([cli, "gradebook", "--server", base, "--token", "llm_wrong"], env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "401" in r.stderr, r.stderr
    finally:
        proc.kill()
        proc.wait()


def test_store_creates_its_folders_on_a_first_run(tmp_path):
    from llmlab.platform.submissions import Store

    store = Store(f"sqlite:///{tmp_path / 'new' / 'deeper' / 'g.sqlite'}", tmp_path / "new" / "files")
    assert store.authenticate(store.add_learner("first")) is not None


@pytest.mark.sandbox
def test_on_postgresql(ray_address, postgres_url, tmp_path):
    """The same service on a real PostgreSQL server: learners, an idempotent submission graded on Ray, the
    gradebook, and a restart that reads it all back."""
    settings = GraderSettings(database_url=postgres_url, files_dir=tmp_path / "files", ray_address=ray_address,
                              reconcile_interval_s=0.3)
    app = create_app(settings)
    token = app.state.store.add_learner("pat")
    with TestClient(app) as client:
        post = lambda: client.post("/v1/submissions", data={"lab": "m01"}, files={"file": ("a.py", REFERENCE)},
                                   headers={**auth(token), "Idempotency-Key": "pg-1"})
        first, again = post(), post()
        assert first.status_code == again.status_code == 202 and first.json()["id"] == again.json()["id"]
        sub = wait_graded(client, first.json()["id"], token)
        assert sub["state"] == "graded" and sub["score"] == 14
    with TestClient(create_app(settings)) as client:  # a new process would see the same
        book = client.get("/v1/gradebook", headers=auth(token)).json()
        assert book[0]["learner"] == "pat" and book[0]["labs"][0]["best"] == 14
        assert client.get(f"/v1/submissions/{sub['id']}", headers=auth(token)).json()["finished_at"]
