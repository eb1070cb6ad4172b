"""A client of the grading service's HTTP API (``llmlab serve grader``), for the CLI and for notebooks:

    from llmlab.platform.grading_client import GradingClient
    with GradingClient("http://grader.example:8000", token) as grader:
        sub = grader.submit("m01", "my_linalg.py", wait=True)
        print(sub["score"], grader.gradebook()[0].overall)
"""

from __future__ import annotations

import io
import time
import uuid
import zipfile
from pathlib import Path

import httpx

from llmlab.contracts import CourseGrade, GradeResult


class ServiceError(RuntimeError):
    """The service refused a request (``status`` < 500: the request's fault) or could not be reached."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def _payload(path: Path) -> tuple[str, bytes]:
    """A .py file as is; a folder as a zip of its files (no caches)."""
    if not path.is_dir():
        return path.name, path.read_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            z.write(f, f.relative_to(path))
    return f"{path.name}.zip", buf.getvalue()


class GradingClient:
    def __init__(self, server: str, token: str, *, timeout: float = 60, retries: int = 5):
        if not token:
            raise ServiceError("the grading service needs a token (`--token` or LLMLAB_TOKEN)", 401)
        self.server, self.retries = server.rstrip("/"), retries
        self.http = httpx.Client(base_url=self.server, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)

    def __enter__(self) -> GradingClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _request(self, method: str, url: str, **kwargs) -> httpx.Response:
        """Retries transport errors with backoff: every call here is idempotent (a submission carries an
        Idempotency-Key, so a retried POST is one submission)."""
        for attempt in range(self.retries):
            try:
                r = self.http.request(method, url, **kwargs)
                break
            except httpx.TransportError as e:
                if attempt == self.retries - 1:
                    raise ServiceError(f"cannot reach {self.server}: {e}") from None
                time.sleep(min(2**attempt, 8))
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise ServiceError(f"{method} {url} -> {r.status_code}: {str(detail)[:500]}", r.status_code)
        return r

    def submit(self, lab: str, path: str | Path, *, wait: bool = False, on_state=None,
               poll_s: float = 1.0) -> dict:
        """Submit a .py file or a folder for ``lab``; the submission record (when ``wait``, once graded or
        failed)."""
        path = Path(path)
        if not path.exists():
            raise ServiceError(f"no such submission: {path}", 400)
        name, data = _payload(path)
        sub = self._request("POST", "/v1/submissions", data={"lab": lab}, files={"file": (name, data)},
                            headers={"Idempotency-Key": uuid.uuid4().hex}).json()
        while wait and sub["state"] in ("queued", "running"):
            time.sleep(poll_s)
            sub = self.submission(sub["id"])
            if on_state:
                on_state(sub["state"])
        return sub

    def submission(self, submission_id: str) -> dict:
        return self._request("GET", f"/v1/submissions/{submission_id}").json()

    def result(self, submission: dict) -> GradeResult:
        if submission["state"] != "graded":
            raise ServiceError(f"submission {submission['id']} {submission['state']}: {submission.get('error')}")
        return GradeResult.model_validate(submission["result"])

    def gradebook(self) -> list[CourseGrade]:
        """Your own gradebook (everyone's, with an instructor's token)."""
        return [CourseGrade.model_validate(b) for b in self._request("GET", "/v1/gradebook").json()]
