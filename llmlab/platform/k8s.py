"""LabSubmission -> KubeRay RayJob, and RayJob status -> LabSubmission status (used by the operator), and
the grading service's client for LabSubmissions (the official ``kubernetes`` client).

The mapping is pure functions over plain dicts, so it is tested on its own and the RayJobs it builds are
validated against KubeRay's CRD schema.
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


class KubeClient:
    """LabSubmission resources through the official ``kubernetes`` client, configured as kubectl users
    expect: an explicit API server URL (``kubectl proxy``'s http://127.0.0.1:8001, or an API emulator in
    tests) with an optional bearer token; else the pod's service account in a cluster; else a kubeconfig
    file (``$KUBECONFIG`` or ~/.kube/config) and its current or a named context."""

    def __init__(self, server: str | None = None, *, token: str | None = None, kubeconfig: str | None = None,
                 context: str | None = None):
        from kubernetes import client, config

        cfg = client.Configuration()
        if server:
            cfg.host = server.rstrip("/")
            if token:
                cfg.api_key = {"authorization": f"Bearer {token}"}
        else:
            try:
                if kubeconfig or context:
                    raise config.ConfigException("a kubeconfig was asked for")
                config.load_incluster_config(client_configuration=cfg)
            except config.ConfigException:
                try:
                    config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
                except (config.ConfigException, OSError) as e:
                    raise KubeError(0, f"no Kubernetes credentials (not in a pod, and no usable kubeconfig: "
                                       f"{e}); give the API server's URL") from None
        self.api = client.CustomObjectsApi(client.ApiClient(cfg))

    def _call(self, fn, *args, **kwargs) -> dict:
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(GROUP, VERSION, *args, **kwargs)
        except ApiException as e:
            raise KubeError(e.status or 0, _message(e)) from None

    def create_labsubmission(self, namespace: str, body: dict) -> dict:
        return self._call(self.api.create_namespaced_custom_object, namespace, PLURAL, body)

    def get_labsubmission(self, namespace: str, name: str) -> dict:
        return self._call(self.api.get_namespaced_custom_object, namespace, PLURAL, name)

    def list_labsubmissions(self, namespace: str, label_selector: str = "") -> list[dict]:
        return self._call(self.api.list_namespaced_custom_object, namespace, PLURAL,
                          label_selector=label_selector)["items"]

    def watch_labsubmissions(self, namespace: str, timeout_seconds: int = 60):
        """(event type, LabSubmission) as they change, for ``timeout_seconds`` (the client's watch)."""
        from kubernetes import watch

        for event in watch.Watch().stream(self.api.list_namespaced_custom_object, GROUP, VERSION, namespace,
                                          PLURAL, timeout_seconds=timeout_seconds):
            yield event["type"], event["object"]


def _message(e) -> str:
    import json

    try:
        return str(json.loads(e.body).get("message", e.body))[:500]
    except (TypeError, ValueError):
        return str(e.body or e.reason)[:500]
