"""Grading backends: a Ray job per submission, or a LabSubmission resource on Kubernetes (whose grader fetches
the source through a signed link)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from llmlab.contracts import GradeResult
from llmlab.platform.submissions.models import _now
from llmlab.platform.submissions.store import Store

log = logging.getLogger(__name__)


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
            self.kube.create_labsubmission(self.namespace, body)
        except k8s.KubeError as e:
            if e.status != 409:  # 409: created before a crash; it is there already
                raise

    def poll(self, job_id: str) -> Poll:
        from llmlab.platform import k8s

        try:
            sub = self.kube.get_labsubmission(self.namespace, job_id)
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
