"""The LabSubmission operator: each LabSubmission becomes a KubeRay RayJob that grades it, and the RayJob's
progress and the grading result flow back into the LabSubmission's status.

    kopf run -m operators.labsubmission --all-namespaces     (or: llmlab serve operator)

Thin on purpose: the RayJob and the status mapping come from ``llmlab.platform.k8s``; results are read from the Ray
dashboard the RayJob reports, through ``llmlab.platform.jobs.client`` (the same result record as `llmlab submit`).
Handlers are idempotent (a RayJob that already exists is adopted), retried with kopf's backoff, and a
finalizer removes the RayJob when its LabSubmission is deleted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl

import aiohttp
import kopf

from llmlab.platform import k8s
from llmlab.platform.jobs import client as ray_client

SETTINGS = k8s.OperatorSettings(
    llmlab_image=os.environ.get("LLMLAB_IMAGE", k8s.OperatorSettings.llmlab_image),
    ray_cluster=os.environ.get("LLMLAB_RAY_CLUSTER", ""),
    result_key_secret=os.environ.get("LLMLAB_RESULT_KEY_SECRET", ""),
    bubblewrap=os.environ.get("LLMLAB_SANDBOX_BUBBLEWRAP", "true").lower() == "true",
    runtime_class=os.environ.get("LLMLAB_SANDBOX_RUNTIME_CLASS", ""),
)
_conn: kopf.ConnectionInfo | None = None


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_):
    settings.persistence.finalizer = "llmlab.dev/operator"
    settings.scanning.disabled = True  # the CRDs come with the chart; no cluster-wide CRD/namespace listing
    settings.queueing.error_delays = [1, 2, 5, 10, 30, 60, 120]  # retry backoff of failed handlers
    settings.posting.level = logging.WARNING


@kopf.on.login()
def login(**kwargs) -> kopf.ConnectionInfo | None:
    """In a pod: the service account; elsewhere: kubeconfig; LLMLAB_KUBE_SERVER: a plain URL (kubectl proxy)."""
    global _conn
    server = os.environ.get("LLMLAB_KUBE_SERVER")
    if server:
        _conn = kopf.ConnectionInfo(server=server, insecure=True)
    else:
        _conn = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    return _conn


async def kube(method: str, path: str, body: dict | None = None, merge: bool = False) -> tuple[int, dict]:
    """One call to the Kubernetes API with the operator's credentials."""
    if _conn is None:
        raise kopf.TemporaryError("not logged in yet", delay=1)
    headers = {"Content-Type": "application/merge-patch+json" if merge else "application/json"}
    if _conn.token:
        headers["Authorization"] = f"Bearer {_conn.token}"
    ctx: ssl.SSLContext | bool = False if _conn.insecure else ssl.create_default_context(
        cafile=_conn.ca_path, cadata=_conn.ca_data.decode() if _conn.ca_data else None)
    async with aiohttp.ClientSession() as session:
        async with session.request(method, _conn.server.rstrip("/") + path, json=body, headers=headers,
                                   ssl=ctx) as r:
            try:
                return r.status, await r.json(content_type=None)
            except (ValueError, aiohttp.ContentTypeError):
                return r.status, {}


def _rayjobs(namespace: str) -> str:
    return f"/apis/ray.io/v1/namespaces/{namespace}/rayjobs"


def _submission(namespace: str, name: str) -> str:
    return f"/apis/{k8s.GROUP}/{k8s.VERSION}/namespaces/{namespace}/{k8s.PLURAL}/{name}"


@kopf.on.create(k8s.GROUP, k8s.VERSION, k8s.PLURAL)
async def create_rayjob(body, namespace, patch, logger, **_):
    manifest = k8s.rayjob_manifest(dict(body), SETTINGS)
    kopf.adopt(manifest, owner=body)
    status, answer = await kube("POST", _rayjobs(namespace), manifest)
    if status == 409:
        logger.info("RayJob %s exists already: adopting it", manifest["metadata"]["name"])
    elif status >= 400:
        raise kopf.TemporaryError(f"creating the RayJob failed ({status}): {answer.get('message', answer)}",
                                  delay=10)
    patch.status.update(phase="Pending", rayJob=manifest["metadata"]["name"], rayJobId=manifest["spec"]["jobId"],
                        submittedAt=(body.get("status") or {}).get("submittedAt") or k8s.now_iso(),
                        message="RayJob created")


@kopf.on.event("ray.io", "v1", "rayjobs", labels={k8s.SUBMISSION_LABEL: kopf.PRESENT})
async def follow_rayjob(body, namespace, logger, type, **_):
    if type == "DELETED":
        return
    name = body["metadata"]["labels"][k8s.SUBMISSION_LABEL]
    code, current = await kube("GET", _submission(namespace, name))
    if code == 404:
        return
    if (current.get("status") or {}).get("phase") in k8s.TERMINAL_PHASES:
        return  # a final phase is final (a late event must not undo a deadline, say)
    rs = body.get("status") or {}
    phase = k8s.phase_of(rs)
    update: dict = {"phase": phase, "message": rs.get("message", "")}
    if rs.get("startTime"):
        update["startedAt"] = rs["startTime"]
    if phase == "Succeeded":
        job_id = rs.get("jobId") or body["spec"].get("jobId")
        address = rs.get("dashboardURL", "")
        address = address if address.startswith("http") else f"http://{address}"
        try:
            result = await asyncio.to_thread(ray_client.result, job_id, address)
        except Exception as e:  # noqa: BLE001 - a job without a readable result is a failed grading
            update.update(phase="Failed", message=f"no grading result: {e}")
        else:
            update.update(score=result.score, maxScore=result.max_score,
                          message=f"{result.score:g}/{result.max_score:g}", result=json.loads(result.model_dump_json()))
    if update["phase"] in k8s.TERMINAL_PHASES:
        update["finishedAt"] = rs.get("endTime") or k8s.now_iso()
    code, answer = await kube("PATCH", _submission(namespace, name) + "/status", {"status": update}, merge=True)
    if code >= 400:
        raise kopf.TemporaryError(f"updating {name}'s status failed ({code}): {answer}", delay=5)


@kopf.timer(k8s.GROUP, k8s.VERSION, k8s.PLURAL, interval=5,
            when=lambda status, **_: (status or {}).get("phase") not in k8s.TERMINAL_PHASES)
async def enforce_deadline(body, namespace, name, patch, **_):
    if k8s.deadline_passed(dict(body)):
        await kube("DELETE", f"{_rayjobs(namespace)}/{k8s.rayjob_name(name)}")
        patch.status.update(phase="DeadlineExceeded", finishedAt=k8s.now_iso(),
                            message=f"not graded within {body['spec'].get('deadlineSeconds', 900)}s")


@kopf.on.delete(k8s.GROUP, k8s.VERSION, k8s.PLURAL)
async def delete_rayjob(namespace, name, **_):
    code, answer = await kube("DELETE", f"{_rayjobs(namespace)}/{k8s.rayjob_name(name)}")
    if code >= 400 and code != 404:
        raise kopf.TemporaryError(f"deleting the RayJob failed ({code}): {answer}", delay=5)
