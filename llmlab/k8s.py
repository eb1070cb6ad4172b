"""LabSubmission -> KubeRay RayJob, and RayJob status -> LabSubmission status (used by the operator).

Pure functions over plain dicts: no Kubernetes client here, so the mapping is tested on its own and the
RayJobs it builds are validated against KubeRay's CRD schema.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import yaml

GROUP, VERSION, PLURAL, KIND = "llmlab.dev", "v1alpha1", "labsubmissions", "LabSubmission"
SUBMISSION_LABEL = "llmlab.dev/submission"
TERMINAL_PHASES = ("Succeeded", "Failed", "DeadlineExceeded")


@dataclass(frozen=True)
class OperatorSettings:
    ray_image: str = "rayproject/ray:2.60.0-py311"
    llmlab_image: str = "ghcr.io/llmlab/llmlab:0.1.0"
    ray_cluster: str = ""  # the RayCluster for submissions that name none; empty: an ephemeral one each
    ttl_seconds_after_finished: int = 600
    default_deadline_seconds: int = 900


def rayjob_name(submission_name: str) -> str:
    return f"grade-{submission_name}"[:63].rstrip("-")


def ray_job_id(namespace: str, name: str) -> str:
    """The Ray job id the RayJob runs under: fixed, so results can be read back from the Ray dashboard."""
    return re.sub(r"[^a-z0-9-]", "-", f"llmlab-{namespace}-{name}".lower())[:100]


def rayjob_manifest(sub: dict, settings: OperatorSettings = OperatorSettings()) -> dict:
    """The RayJob that grades LabSubmission ``sub`` (its dict as the API returns it)."""
    meta, spec = sub["metadata"], sub["spec"]
    source = spec["source"]
    path = source.get("path", "submission")
    deadline = int(spec.get("deadlineSeconds", settings.default_deadline_seconds))
    resources = spec.get("resources", {})
    runtime_env = {"working_dir": source["workingDirURI"]}
    job = {
        "entrypoint": f"python -m llmlab.jobs.grade_job {spec['lab']} {path} --learner {spec['learner']}",
        "runtimeEnvYAML": yaml.safe_dump(runtime_env, sort_keys=True),
        "jobId": ray_job_id(meta["namespace"], meta["name"]),
        "metadata": {"llmlab.kind": "grade", "llmlab.lab": spec["lab"], "llmlab.learner": spec["learner"]},
        "entrypointNumCpus": float(resources.get("cpu", 1)),
        "activeDeadlineSeconds": deadline,
        "submissionMode": "HTTPMode",  # the operator's Ray client submits; no submitter pod needed
    }
    cluster_name = spec.get("cluster", {}).get("name") or settings.ray_cluster
    if cluster_name:  # the platform's long-running RayCluster
        job["clusterSelector"] = {"ray.io/cluster": cluster_name}
        job["shutdownAfterJobFinishes"] = False  # never tear down the shared cluster
    else:  # an ephemeral cluster for this one grading, removed after ttlSecondsAfterFinished
        job["shutdownAfterJobFinishes"] = True
        job["ttlSecondsAfterFinished"] = settings.ttl_seconds_after_finished
        job["rayClusterSpec"] = _ephemeral_cluster(settings, resources)
    return {
        "apiVersion": "ray.io/v1", "kind": "RayJob",
        "metadata": {"name": rayjob_name(meta["name"]), "namespace": meta["namespace"],
                     "labels": {SUBMISSION_LABEL: meta["name"], "app.kubernetes.io/managed-by": "llmlab-operator",
                                "app.kubernetes.io/part-of": "llmlab"}},
        "spec": job,
    }


def _ephemeral_cluster(settings: OperatorSettings, resources: dict) -> dict:
    limits = {"cpu": str(resources.get("cpu", 1)), "memory": str(resources.get("memory", "2Gi"))}
    security = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    return {"headGroupSpec": {"rayStartParams": {}, "template": {"metadata": {"labels": {
        "llmlab.dev/runs-learner-code": "true"}}, "spec": {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "ray-head", "image": settings.llmlab_image,
                        "resources": {"requests": limits, "limits": limits}, "securityContext": security}]}}}}


JOB_PHASES = {"PENDING": "Pending", "RUNNING": "Running", "SUCCEEDED": "Succeeded", "FAILED": "Failed",
              "STOPPED": "Failed"}


def phase_of(rayjob_status: dict) -> str:
    """The LabSubmission phase a RayJob's status implies (before the result is read)."""
    if rayjob_status.get("reason") == "DeadlineExceeded":
        return "DeadlineExceeded"
    job = rayjob_status.get("jobStatus")
    if job:
        return JOB_PHASES.get(job, "Running")
    if rayjob_status.get("jobDeploymentStatus") == "Failed":
        return "Failed"
    return "Pending"


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def deadline_passed(sub: dict, now: dt.datetime | None = None) -> bool:
    """Whether the submission's deadline, counted from when the operator first saw it, has passed."""
    created = (sub.get("status") or {}).get("submittedAt") or sub["metadata"].get("creationTimestamp")
    if not created:
        return False
    start = dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
    limit = int(sub["spec"].get("deadlineSeconds", OperatorSettings.default_deadline_seconds))
    return (now or dt.datetime.now(dt.UTC)) > start + dt.timedelta(seconds=limit)
