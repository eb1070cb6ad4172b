"""Submit lab gradings as Ray jobs and read their results, through Ray's Job Submission API.

Works against any Ray cluster: the local head (default) or ``--address http://HOST:8265`` such as a KubeRay
head service. The submission travels as the job's ``runtime_env.working_dir``; lab and learner go in the
job's metadata; the result comes back as the record described in :mod:`llmlab.platform.jobs.record`.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from llmlab.contracts import GradeResult, JobRecord
from llmlab.platform.jobs import local, record
from llmlab.platform.jobs.grade_job import entrypoint

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
# A job reserves one CPU (entrypoint_num_cpus=1): its math libraries get one thread, because two jobs that
# each spin two OpenMP threads on two cores slow each other down about tenfold (measured here).
ONE_CPU_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class JobError(RuntimeError):
    pass


class JobExists(JobError):
    """A job with this submission id was submitted before (submission ids are unique per cluster)."""


@functools.lru_cache(maxsize=16)
def connect(address: str):
    """A (cached) Job Submission client for a Ray dashboard address."""
    from ray.job_submission import JobSubmissionClient

    # not "Uploading package ..." on every submit
    logging.getLogger("ray.dashboard.modules.dashboard_sdk").setLevel(logging.WARNING)
    try:
        return JobSubmissionClient(address)
    except Exception as e:  # connection refused, bad URL, version mismatch
        raise JobError(f"cannot reach the Ray job server at {address}: {e}") from None


def _stage(submission: Path, into: Path) -> str:
    """Copy the submission under ``into/submission/`` and return its path relative to ``into``."""
    target = into / "submission"
    if submission.is_dir():
        shutil.copytree(submission, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".git"))
        return "submission"
    target.mkdir(parents=True)
    shutil.copy2(submission, target / submission.name)
    return f"submission/{submission.name}"


def submit_grading(lab: str, submission: Path, *, address: str | None = None, learner: str = "anonymous",
                   seed: int | None = None, job_id: str | None = None) -> tuple[str, str]:
    """Submit the grading of ``submission`` for ``lab``; returns (job id, address). A given ``job_id`` makes
    the submission idempotent: submitting it again raises JobExists."""
    from llmlab.labs import LabNotBuilt, is_built, module_name

    module_name(lab)  # UnknownLab here, not in the job (and without importing torch on the client)
    if not is_built(lab):
        raise LabNotBuilt(f"lab {lab} is not built yet")
    submission = Path(submission).resolve()
    if not submission.exists():
        raise FileNotFoundError(f"no such submission: {submission}")
    address = local.ensure(address)
    ray = connect(address)
    if job_id and _exists(ray, job_id):
        raise JobExists(f"job {job_id} was already submitted")
    job_id = job_id or f"llmlab-{lab}-{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory(prefix="llmlab-stage-") as d:
        rel = _stage(submission, Path(d))
        try:
            ray.submit_job(
                entrypoint=entrypoint(lab, rel, learner=learner, seed=seed), submission_id=job_id,
                entrypoint_num_cpus=1,
                runtime_env={"working_dir": d, "env_vars": ONE_CPU_ENV},
                metadata={"llmlab.kind": "grade", "llmlab.lab": lab, "llmlab.learner": learner,
                          "llmlab.submission": submission.name},
            )
        except RuntimeError as e:
            if "already exists" in str(e):  # lost a race with another submitter of the same id
                raise JobExists(f"job {job_id} was already submitted") from None
            raise
    return job_id, address


def _exists(ray, job_id: str) -> bool:
    try:
        ray.get_job_info(job_id)
        return True
    except RuntimeError:  # the job API answers 404 for an unknown id
        return False


def status(job_id: str, address: str) -> str:
    return str(connect(address).get_job_status(job_id).value)


def wait(job_id: str, address: str, timeout: float = 1800, on_status=None) -> str:
    client = connect(address)
    deadline, last = time.monotonic() + timeout, None
    while True:
        status = str(client.get_job_status(job_id).value)
        if status != last and on_status:
            on_status(status)
        last = status
        if status in TERMINAL:
            return status
        if time.monotonic() > deadline:
            raise JobError(f"job {job_id} still {status} after {timeout:g}s")
        time.sleep(0.5)


def result(job_id: str, address: str) -> GradeResult:
    """The grading result of a finished job, from its result record."""
    client = connect(address)
    info = client.get_job_info(job_id)
    try:
        return record.decode(client.get_job_logs(job_id), GradeResult)
    except record.RecordError as e:
        raise JobError(f"job {job_id} ({info.status}) returned no grading result: {e}. "
                       f"{info.message or ''} See `llmlab job {job_id} --logs`.") from None


def _to_record(info, address: str, with_result: bool, client=None) -> JobRecord:
    meta = info.metadata or {}
    rec = JobRecord(job_id=info.submission_id or info.job_id or "?", lab=meta.get("llmlab.lab"),
                    learner=meta.get("llmlab.learner"), status=str(info.status.value), address=address,
                    submitted_at=dt.datetime.fromtimestamp(info.start_time / 1000, dt.UTC) if info.start_time else None,
                    message=info.message)
    if with_result and rec.status == "SUCCEEDED":
        try:
            rec.result = record.decode(client.get_job_logs(rec.job_id), GradeResult)
        except record.RecordError:
            pass
    return rec


def list_jobs(address: str | None = None) -> list[JobRecord]:
    address = address or local.default_address()
    client = connect(address)
    jobs = [j for j in client.list_jobs() if (j.metadata or {}).get("llmlab.kind")]
    jobs.sort(key=lambda j: j.start_time or 0, reverse=True)
    return [_to_record(j, address, False) for j in jobs]


def get_job(job_id: str, address: str | None = None) -> JobRecord:
    address = address or local.default_address()
    client = connect(address)
    try:
        info = client.get_job_info(job_id)
    except Exception:
        raise JobError(f"no job {job_id!r} on {address}") from None
    return _to_record(info, address, True, client)


def logs(job_id: str, address: str | None = None) -> str:
    return connect(address or local.default_address()).get_job_logs(job_id)
