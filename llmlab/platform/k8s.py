"""LabSubmission -> KubeRay RayJob, and RayJob status -> LabSubmission status (used by the operator).

Pure functions over plain dicts: no Kubernetes client here, so the mapping is tested on its own and the
RayJobs it builds are validated against KubeRay's CRD schema.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import yaml

from llmlab.platform.jobs.grade_job import entrypoint as grade_entrypoint

GROUP, VERSION, PLURAL, KIND = "llmlab.dev", "v1alpha1", "labsubmissions", "LabSubmission"
SUBMISSION_LABEL = "llmlab.dev/submission"
TERMINAL_PHASES = ("Succeeded", "Failed", "DeadlineExceeded")


@dataclass(frozen=True)
class OperatorSettings:
    llmlab_image: str = "ghcr.io/llmlab/llmlab:0.1.0"  # built on Ray's image: ephemeral clusters run it
    ray_cluster: str = ""  # the RayCluster for submissions that name none; empty: an ephemeral one each
    ttl_seconds_after_finished: int = 600
    default_deadline_seconds: int = 900
    result_key_secret: str = ""  # the Secret holding the result-record key (mounted into ephemeral clusters)
    bubblewrap: bool = True  # learner-code pods may create user namespaces (seccomp, AppArmor unconfined)
    runtime_class: str = ""  # a sandboxed RuntimeClass around learner-code pods, e.g. gvisor


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
        "entrypoint": grade_entrypoint(spec["lab"], path, learner=spec["learner"]),
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
    """One grading's cluster: the head runs the job (and so the learner's code, under bubblewrap), with the
    result key mounted and the sandbox's needs (see the chart's ``sandbox`` values)."""
    limits = {"cpu": str(resources.get("cpu", 1)), "memory": str(resources.get("memory", "2Gi"))}
    security = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    pod_security = {"runAsNonRoot": True, "runAsUser": 1000,
                    "seccompProfile": {"type": "Unconfined" if settings.bubblewrap else "RuntimeDefault"}}
    container = {"name": "ray-head", "image": settings.llmlab_image, "securityContext": security,
                 "resources": {"requests": limits, "limits": limits}}
    pod = {"securityContext": pod_security, "containers": [container]}
    metadata = {"labels": {"llmlab.dev/runs-learner-code": "true"}}
    if settings.bubblewrap:
        metadata["annotations"] = {"container.apparmor.security.beta.kubernetes.io/ray-head": "unconfined"}
    if settings.runtime_class:
        pod["runtimeClassName"] = settings.runtime_class
    if settings.result_key_secret:
        container["env"] = [{"name": "LLMLAB_RESULT_KEY_FILE", "value": "/etc/llmlab/result-key/key"}]
        container["volumeMounts"] = [{"name": "result-key", "mountPath": "/etc/llmlab/result-key", "readOnly": True}]
        pod["volumes"] = [{"name": "result-key", "secret": {"secretName": settings.result_key_secret,
                                                              "defaultMode": 0o400}}]
    return {"headGroupSpec": {"rayStartParams": {}, "template": {"metadata": metadata, "spec": pod}}}


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


def labsubmission_manifest(name: str, namespace: str, *, lab: str, learner: str, working_dir_uri: str,
                           path: str = "submission", cluster: str = "", deadline_seconds: int | None = None,
                           labels: dict | None = None) -> dict:
    """A LabSubmission custom resource (what ``kubectl apply`` or the grading service creates)."""
    spec: dict = {"lab": lab, "learner": learner, "source": {"workingDirURI": working_dir_uri, "path": path}}
    if cluster:
        spec["cluster"] = {"name": cluster}
    if deadline_seconds:
        spec["deadlineSeconds"] = int(deadline_seconds)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/part-of": "llmlab", **(labels or {})}},
            "spec": spec}


class KubeError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(f"Kubernetes API answered {status}: {message}")
        self.status = status


SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


class KubeClient:
    """A minimal synchronous Kubernetes API client for custom resources (JSON over HTTPS, no client library).

    In a pod it uses the service account (token and CA mounted by Kubernetes); elsewhere give ``server``
    (``kubectl proxy``'s http://127.0.0.1:8001, or an API emulator in tests) and optionally a ``token``.
    """

    def __init__(self, server: str | None = None, token: str | None = None, ca_file: str | None = None):
        import os

        import httpx

        if server is None:  # in-cluster
            host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            if not host:
                raise KubeError(0, "not in a pod (no KUBERNETES_SERVICE_HOST): give the API server's URL")
            server = f"https://{host}:{port}"
            with open(f"{SERVICE_ACCOUNT}/token") as f:
                token = f.read().strip()
            ca_file = f"{SERVICE_ACCOUNT}/ca.crt"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=server.rstrip("/"), headers=headers, verify=ca_file or True, timeout=30)

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        r = self.http.request(method, path, json=body)
        if r.status_code >= 400:
            try:
                message = r.json().get("message", r.text)
            except ValueError:
                message = r.text
            raise KubeError(r.status_code, message[:500])
        return r.json() if r.content else {}

    @staticmethod
    def labsubmissions(namespace: str, name: str = "") -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}" + (f"/{name}" if name else "")
