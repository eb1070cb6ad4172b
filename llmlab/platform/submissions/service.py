"""The grading service's logic: accept a submission (limits, idempotency), dispatch it to a backend, and
reconcile unfinished ones until each is graded or failed; the integrity report of a submission."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import shutil
import uuid

from sqlalchemy import (
    select,
)

from llmlab.platform.submissions.backends import Backend
from llmlab.platform.submissions.models import Learner, Submission, SubmissionRejected, _now
from llmlab.platform.submissions.store import Store
from llmlab.platform.submissions.uploads import _fsync_write, unpack

log = logging.getLogger(__name__)


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
