"""Submissions for the grading service: learners with hashed tokens, durable uploads, grading through a
backend (Ray jobs, or a LabSubmission resource on Kubernetes), and reconciliation that loses nothing.

Durability: an upload is written and fsynced, then its row is committed, and only then is it acknowledged.
Grading state moves queued -> running -> graded | failed. Every step is repeatable, so after a crash or
``kill -9`` the reconciler just looks at each unfinished submission again: a queued one is (re)dispatched
under a job id derived from the submission id (a second dispatch finds the first), a running one is polled.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import io
import logging
import os
import re
import secrets
import shutil
import time
import unicodedata
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from llmlab.contracts import GradeResult

log = logging.getLogger(__name__)

Role = Literal["learner", "instructor"]
UNFINISHED = ("queued", "running")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
NAME_RULE = ("1-63 characters: lower-case letters, digits, '.', '_' and '-', starting with a letter or digit "
             "(NFKC-normalised and lower-cased first; unique)")
TOKEN_TTL_DAYS = 90


def normalize_name(name: str) -> str:
    """A learner's name as stored: NFKC (fullwidth and other compatibility forms folded), lower-cased, and
    matched against NAME_PATTERN, so look-alike Unicode, separators, NUL and case variants are refused."""
    folded = unicodedata.normalize("NFKC", name).lower() if isinstance(name, str) else ""
    if not re.fullmatch(NAME_PATTERN, folded):
        raise ValueError(f"invalid learner name {name!r}: {NAME_RULE}")
    return folded


def hash_token(token: str) -> str:
    # tokens are 256-bit random strings, so a plain digest is safe (no password-style stretching needed)
    return hashlib.sha256(token.encode()).hexdigest()


class Base(DeclarativeBase):
    pass


class Learner(Base):
    __tablename__ = "learners"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(20), default="learner")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Token(Base):
    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    learner_id: Mapped[int] = mapped_column(ForeignKey("learners.id"))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Submission(Base):
    __tablename__ = "submissions"
    __table_args__ = (UniqueConstraint("learner_id", "idempotency_key"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    learner_id: Mapped[int] = mapped_column(ForeignKey("learners.id"), index=True)
    lab: Mapped[str] = mapped_column(String(8))
    filename: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    job_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    result_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now, index=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class SubmissionRejected(ValueError):
    """A request the service refuses, with the HTTP status it maps to."""

    def __init__(self, message: str, status: int = 400, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


@dataclass
class Poll:
    state: Literal["running", "succeeded", "failed"]
    result: GradeResult | None = None
    message: str = ""
    reason: str = ""  # failure reason (bounded set, see llmlab.platform.metrics.FAILURE_REASONS)


class Backend(Protocol):
    """Where grading runs. ``dispatch`` must be idempotent for a given ``job_id``."""

    def dispatch(self, job_id: str, submission_id: str, lab: str, path: Path, learner: str) -> None: ...

    def poll(self, job_id: str) -> Poll: ...


class RayBackend:
    """Grading as Ray jobs through the Job Submission API (a local head or any ``address``). A job still
    unfinished ``deadline_seconds`` after Ray accepted it is stopped and the submission fails (Ray jobs have
    no deadline of their own; the grader inside bounds its own work, this bounds everything around it)."""

    def __init__(self, address: str | None = None, deadline_seconds: int = 900):
        self.address, self.deadline_seconds = address, deadline_seconds

    def _address(self) -> str:
        from llmlab.platform.jobs import local

        self.address = local.ensure(self.address)
        return self.address

    def dispatch(self, job_id: str, submission_id: str, lab: str, path: Path, learner: str) -> None:
        from llmlab.platform.jobs import client

        try:
            client.submit_grading(lab, path, address=self._address(), learner=learner, job_id=job_id)
        except client.JobExists:
            pass  # dispatched before a crash: the job is there already

    def poll(self, job_id: str) -> Poll:
        from llmlab.platform.jobs import client

        info = client.connect(self._address()).get_job_info(job_id)
        status = str(info.status.value)
        if status not in client.TERMINAL:
            if info.start_time and time.time() - info.start_time / 1000 > self.deadline_seconds:
                client.connect(self._address()).stop_job(job_id)
                return Poll("failed", message=f"not graded within {self.deadline_seconds}s: the job was stopped",
                            reason="deadline_exceeded")
            return Poll("running")
        if status != "SUCCEEDED":
            return Poll("failed", message=f"the grading job ended {status}",
                        reason="job_stopped" if status == "STOPPED" else "job_failed")
        try:
            return Poll("succeeded", client.result(job_id, self._address()))
        except client.JobError as e:
            return Poll("failed", message=str(e), reason="no_result")


class SourceLinks:
    """Signed, expiring URLs at which the grading service hands a submission to a Ray cluster, as a zip that
    Ray's ``runtime_env.working_dir`` accepts (like an S3 presigned URL: whoever holds the link may fetch
    that one submission until it expires; nothing else is reachable with it)."""

    def __init__(self, base_url: str, key: str, ttl_s: int = 24 * 3600):
        if len(key) < 16:
            raise ValueError("the source signing key must be at least 16 characters")
        self.base_url, self.key, self.ttl_s = base_url.rstrip("/"), key.encode(), ttl_s

    def _sign(self, submission_id: str, expires: int) -> str:
        return hmac.new(self.key, f"{submission_id}:{expires}".encode(), hashlib.sha256).hexdigest()

    def url(self, submission_id: str, now: float | None = None) -> str:
        expires = int((now if now is not None else _now().timestamp()) + self.ttl_s)
        sig = self._sign(submission_id, expires)
        return f"{self.base_url}/v1/sources/{submission_id}.zip?expires={expires}&sig={sig}"

    def verify(self, submission_id: str, expires: int, sig: str) -> bool:
        if not (sig.isascii() and len(sig) <= 128 and 0 <= expires < 2**40):  # compare_digest takes ASCII only
            return False
        return expires >= _now().timestamp() and hmac.compare_digest(sig, self._sign(submission_id, expires))


def source_zip(store: Store, submission_id: str) -> Path:
    """The submission as a zip with one top-level folder (which Ray strips), so the working dir holds
    ``submission/``, the same layout as a Ray-job submission. Built once, atomically."""
    target = store.files_dir / submission_id / "source.zip"
    if not target.exists():
        folder = store.path(submission_id)
        tmp = target.with_suffix(".tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(folder.rglob("*")):
                if f.is_file():
                    z.write(f, f"src/submission/{f.relative_to(folder)}")
        os.replace(tmp, target)
    return target


class KubernetesBackend:
    """Grading through the LabSubmission operator: one LabSubmission per submission, named by the job id;
    its status (written by the operator from the RayJob) is the grading state."""

    def __init__(self, kube, namespace: str, links: SourceLinks, cluster: str = "", deadline_seconds: int = 900):
        self.kube, self.namespace, self.links = kube, namespace, links
        self.cluster, self.deadline_seconds = cluster, deadline_seconds

    def dispatch(self, job_id: str, submission_id: str, lab: str, path: Path, learner: str) -> None:
        from llmlab.platform import k8s

        body = k8s.labsubmission_manifest(job_id, self.namespace, lab=lab, learner=learner,
                                          working_dir_uri=self.links.url(submission_id), cluster=self.cluster,
                                          deadline_seconds=self.deadline_seconds,
                                          labels={"llmlab.dev/submission-id": submission_id})
        try:
            self.kube.request("POST", k8s.KubeClient.labsubmissions(self.namespace), body)
        except k8s.KubeError as e:
            if e.status != 409:  # 409: created before a crash; it is there already
                raise

    def poll(self, job_id: str) -> Poll:
        from llmlab.platform import k8s

        try:
            sub = self.kube.request("GET", k8s.KubeClient.labsubmissions(self.namespace, job_id))
        except k8s.KubeError as e:
            if e.status == 404:
                return Poll("failed", message=f"the LabSubmission {job_id} was deleted", reason="job_stopped")
            raise
        status = sub.get("status") or {}
        phase, message = status.get("phase", "Pending"), status.get("message", "")
        if phase == "Succeeded":
            try:
                return Poll("succeeded", GradeResult.model_validate(status["result"]))
            except (KeyError, ValueError) as e:
                return Poll("failed", message=f"the LabSubmission has no valid result: {e}", reason="no_result")
        if phase == "Failed":
            return Poll("failed", message=message or "the grading RayJob failed", reason="job_failed")
        if phase == "DeadlineExceeded":
            return Poll("failed", message=message or "not graded before the deadline", reason="deadline_exceeded")
        return Poll("running")


class Store:
    """Learners, tokens and submissions in SQL (SQLite by default, PostgreSQL by URL), files on disk."""

    def __init__(self, url: str, files_dir: Path, token_ttl_days: int = TOKEN_TTL_DAYS):
        if url.startswith("sqlite:///"):  # a first run: the folder of the database file may not exist yet
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(url, connect_args={"timeout": 30} if url.startswith("sqlite") else {})
        Base.metadata.create_all(self.engine)
        self.session = sessionmaker(self.engine, expire_on_commit=False)
        self.token_ttl = dt.timedelta(days=token_ttl_days)
        self._migrate()
        self.files_dir = Path(files_dir)
        self.files_dir.mkdir(parents=True, exist_ok=True)

    def _migrate(self) -> None:
        """Columns added since a database was made (create_all makes tables, not columns). Tokens from before
        expiry existed expire one TTL from the upgrade."""
        if "expires_at" not in {c["name"] for c in inspect(self.engine).get_columns("tokens")}:
            with self.engine.begin() as c:
                c.execute(text("ALTER TABLE tokens ADD COLUMN expires_at TIMESTAMP"))
        with self.session.begin() as s:
            for t in s.scalars(select(Token).where(Token.expires_at.is_(None))):
                t.expires_at = _now() + self.token_ttl

    # --- people ---------------------------------------------------------------------------------------
    def add_learner(self, name: str, role: Role = "learner") -> str:
        """Create a learner (or instructor) and return a new token: shown once, stored hashed. The name is
        normalised (``normalize_name``) and must be unique; ValueError otherwise."""
        if role not in ("learner", "instructor"):
            raise ValueError("role must be 'learner' or 'instructor'")
        name = normalize_name(name)
        with self.session.begin() as s:
            if s.scalar(select(Learner).where(func.lower(Learner.name) == name)):
                raise ValueError(f"learner {name!r} exists; use issue_token for a new token")
            s.add(Learner(name=name, role=role))
        return self.issue_token(name)

    def _learner(self, s, name: str) -> Learner:
        try:
            folded = normalize_name(name)
        except ValueError:
            raise LookupError(f"no learner {name!r}") from None
        learner = s.scalar(select(Learner).where(func.lower(Learner.name) == folded))
        if learner is None:
            raise LookupError(f"no learner {name!r}")
        return learner

    def issue_token(self, name: str, revoke_others: bool = False) -> str:
        """A new token for ``name``, valid for the store's TTL; ``revoke_others`` makes it a rotation."""
        token = "llm_" + secrets.token_urlsafe(32)
        with self.session.begin() as s:
            learner = self._learner(s, name)
            if revoke_others:
                for t in s.scalars(select(Token).where(Token.learner_id == learner.id, Token.revoked.is_(False))):
                    t.revoked = True
            s.add(Token(learner_id=learner.id, token_sha256=hash_token(token), expires_at=_now() + self.token_ttl))
        return token

    def revoke_tokens(self, name: str) -> int:
        with self.session.begin() as s:
            learner = self._learner(s, name)
            tokens = s.scalars(select(Token).where(Token.learner_id == learner.id, Token.revoked.is_(False))).all()
            for t in tokens:
                t.revoked = True
            return len(tokens)

    def authenticate(self, token: str) -> Learner | None:
        if not token.isascii() or len(token) > 200:
            return None
        with self.session() as s:
            return s.scalar(select(Learner).join(Token).where(Token.token_sha256 == hash_token(token),
                                                               Token.revoked.is_(False), Token.expires_at > _now()))

    def learners(self) -> list[Learner]:
        with self.session() as s:
            return list(s.scalars(select(Learner).order_by(Learner.name)))

    # --- submissions --------------------------------------------------------------------------------
    def get(self, submission_id: str) -> Submission | None:
        with self.session() as s:
            return s.get(Submission, submission_id)

    def list(self, learner_id: int | None = None, limit: int = 100) -> list[Submission]:
        with self.session() as s:
            q = select(Submission).order_by(Submission.created_at.desc()).limit(limit)
            if learner_id is not None:
                q = q.where(Submission.learner_id == learner_id)
            return list(s.scalars(q))

    def unfinished(self) -> list[Submission]:
        with self.session() as s:
            return list(s.scalars(select(Submission).where(Submission.state.in_(UNFINISHED))))

    def recent_count(self, learner_id: int, seconds: int) -> int:
        since = _now() - dt.timedelta(seconds=seconds)
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(Submission).where(
                Submission.learner_id == learner_id, Submission.created_at >= since)) or 0

    def by_idempotency_key(self, learner_id: int, key: str) -> Submission | None:
        with self.session() as s:
            return s.scalar(select(Submission).where(Submission.learner_id == learner_id,
                                                     Submission.idempotency_key == key))

    def update(self, submission_id: str, **fields) -> Submission:
        with self.session.begin() as s:
            sub = s.get(Submission, submission_id)
            for k, v in fields.items():
                setattr(sub, k, v)
            return sub

    def learner_name(self, learner_id: int) -> str:
        with self.session() as s:
            return s.get(Learner, learner_id).name

    def path(self, submission_id: str) -> Path:
        return self.files_dir / submission_id / "submission"


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def unpack(filename: str, data: bytes, into: Path, max_files: int = 200, max_bytes: int = 20 * 2**20) -> None:
    """Place an upload in ``into``: a .py file as is, or a .zip extracted with every entry checked: names
    (relative, no '..', no drive letters or backslashes, no NUL, one root), real sizes (a header that lies
    is caught while reading, never trusted), CRCs and the deflate stream. Raises SubmissionRejected."""
    into.mkdir(parents=True)
    if filename.endswith(".py"):
        _fsync_write(into / "submission.py", data)
        return
    if not filename.endswith(".zip"):
        raise SubmissionRejected("upload a .py file or a .zip of a folder", 415)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [m for m in archive.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError):
        raise SubmissionRejected("the .zip is not a valid zip archive") from None
    if not members:
        raise SubmissionRejected("the .zip holds no files")
    if len(members) > max_files or sum(m.file_size for m in members) > max_bytes:
        raise SubmissionRejected(f"the .zip holds more than {max_files} files or {max_bytes} bytes", 413)
    names = [m.filename for m in members]
    for name in names:
        parts = name.split("/")
        if (not name or name.startswith("/") or "\\" in name or "\0" in name or ":" in parts[0]
                or any(p in ("", ".", "..") for p in parts)):
            raise SubmissionRejected(f"the .zip has an unsafe or malformed path: {name!r}")
    prefix = os.path.commonpath(names) if len(names) > 1 else os.path.dirname(names[0])
    if prefix and any(n == prefix for n in names):
        prefix = os.path.dirname(prefix)
    total = 0
    for m in members:
        target = into / (os.path.relpath(m.filename, prefix) if prefix else m.filename)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with archive.open(m) as src:
                body = src.read(m.file_size + 1)  # a header that understates the size reads one byte over
        except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, NotImplementedError,
                RuntimeError) as e:  # bad CRC, corrupt deflate, encrypted, unsupported compression
            raise SubmissionRejected(f"the .zip entry {m.filename!r} cannot be read: {type(e).__name__}") from None
        total += len(body)
        if len(body) > m.file_size or total > max_bytes:
            raise SubmissionRejected(f"the .zip entry {m.filename!r} is larger than its header says", 413)
        _fsync_write(target, body)
    if not ((into / "submission.py").exists() or (into / "__init__.py").exists()):
        raise SubmissionRejected("the .zip needs submission.py (or __init__.py) at its top level")


@functools.cache
def _lab_sources(lab: str) -> tuple[str, str]:
    """(reference, starter) source of a lab."""
    from llmlab.labs import get_lab

    return get_lab(lab).reference_source(), get_lab(lab).starter_source()


def integrity_report(store: Store, sub: Submission) -> dict:
    """For instructors: how much of a submission is llmlab's reference or another learner's submission to
    the same lab (MOSS-style fingerprints, ``llmlab.platform.grading.integrity``). Informational; never scored."""
    from llmlab.platform.grading import integrity

    with store.session() as s:
        others = list(s.scalars(select(Submission).where(Submission.lab == sub.lab,
                                                         Submission.learner_id != sub.learner_id)
                                .order_by(Submission.created_at.desc()).limit(500)))
    names = {learner.id: learner.name for learner in store.learners()}  # one query, not one per submission
    texts = [(o.id, names[o.learner_id], integrity.source_of(store.path(o.id)))
             for o in others if store.path(o.id).exists()]
    source = integrity.source_of(store.path(sub.id)) if store.path(sub.id).exists() else ""
    reference, starter = _lab_sources(sub.lab)
    return integrity.report(source, reference, texts, base=starter).as_dict()


class GradingService:
    """The submissions API's logic; the FastAPI app is a thin shell over it."""

    def __init__(self, store: Store, backend: Backend, metrics=None, max_upload_bytes: int = 2 * 2**20,
                 rate_limit_per_minute: int = 10):
        self.store, self.backend, self.metrics = store, backend, metrics
        self.max_upload_bytes, self.rate_limit_per_minute = max_upload_bytes, rate_limit_per_minute

    def submit(self, learner: Learner, lab: str, filename: str, data: bytes,
               idempotency_key: str | None = None) -> tuple[Submission, bool]:
        """Store an upload durably and queue it. Returns (submission, created); a repeated idempotency key
        returns the first submission and created=False."""
        from llmlab.labs import UnknownLab, is_built, module_name

        if idempotency_key is not None:
            if not (1 <= len(idempotency_key) <= 128 and idempotency_key.isascii() and idempotency_key.isprintable()):
                raise self._reject(lab, "Idempotency-Key must be 1-128 printable ASCII characters", 400)
            earlier = self.store.by_idempotency_key(learner.id, idempotency_key)
            if earlier:
                if (earlier.lab, earlier.sha256, earlier.filename) != (lab, hashlib.sha256(data).hexdigest(),
                                                                      filename[:255]):
                    raise self._reject(lab, "this Idempotency-Key was used for a different request", 422)
                return earlier, False
        try:
            module_name(lab)
        except UnknownLab as e:
            raise self._reject(lab, str(e), 404) from None
        if not is_built(lab):
            raise self._reject(lab, f"lab {lab} is not built yet", 404)
        if len(data) > self.max_upload_bytes:
            raise self._reject(lab, f"upload of {len(data)} bytes is over the {self.max_upload_bytes} byte limit",
                               413)
        if self.store.recent_count(learner.id, 60) >= self.rate_limit_per_minute:
            raise self._reject(lab, f"rate limit: at most {self.rate_limit_per_minute} submissions a minute", 429,
                               retry_after=60)
        sid = uuid.uuid4().hex
        try:
            unpack(filename, data, self.store.path(sid))
            _fsync_write(self.store.files_dir / sid / "upload", data)
        except BaseException as e:  # nothing half-written stays behind, whatever went wrong
            shutil.rmtree(self.store.files_dir / sid, ignore_errors=True)
            if isinstance(e, SubmissionRejected):
                raise self._reject(lab, str(e), e.status) from None
            raise
        sub = Submission(id=sid, learner_id=learner.id, lab=lab, filename=filename[:255],
                         sha256=hashlib.sha256(data).hexdigest(), size=len(data), state="queued",
                         idempotency_key=idempotency_key)
        with self.store.session.begin() as s:
            s.add(sub)
        if self.metrics:
            self.metrics.submissions.labels(lab, "accepted").inc()
        return sub, True

    def _reject(self, lab: str, message: str, status: int, retry_after: int | None = None) -> SubmissionRejected:
        if self.metrics:
            from llmlab.labs import BY_ID

            self.metrics.submissions.labels(lab if lab in BY_ID else "unknown", "rejected").inc()
        return SubmissionRejected(message, status, retry_after)

    def reconcile(self) -> int:
        """Move every unfinished submission forward once; returns how many are still unfinished."""
        pending = self.store.unfinished()
        for sub in pending:
            try:
                self._advance(sub)
            except Exception as e:  # the backend is down: try again on the next pass
                log.warning("reconcile %s: %s", sub.id, e)
        unfinished = len(self.store.unfinished())
        if self.metrics:
            self.metrics.queue_depth.set(unfinished)
        return unfinished

    def _advance(self, sub: Submission) -> None:
        job_id = sub.job_id or f"llmlab-grade-{sub.id}"
        if sub.state == "queued":
            try:
                self.backend.dispatch(job_id, sub.id, sub.lab, self.store.path(sub.id),
                                      self.store.learner_name(sub.learner_id))
            except Exception as e:
                if self.metrics:
                    self.metrics.ray_job_failures.labels("submit_error").inc()
                raise RuntimeError(f"dispatch failed: {e}") from e
            self.store.update(sub.id, state="running", job_id=job_id)
            return
        poll = self.backend.poll(job_id)
        if poll.state == "running":
            return
        now = _now()
        if poll.state == "succeeded":
            r = poll.result
            self.store.update(sub.id, state="graded", score=r.score, max_score=r.max_score,
                              result_json=r.model_dump_json(), finished_at=now)
        else:
            self.store.update(sub.id, state="failed", error=poll.message, finished_at=now)
            if self.metrics:
                self.metrics.ray_job_failures.labels(poll.reason or "job_failed").inc()
        if self.metrics:
            self.metrics.submissions.labels(sub.lab, "graded" if poll.state == "succeeded" else "failed").inc()
            created = sub.created_at if sub.created_at.tzinfo else sub.created_at.replace(tzinfo=dt.UTC)
            self.metrics.grading_duration.labels(sub.lab).observe((now - created).total_seconds())
