"""The LabSubmission operator against kmock, a Kubernetes API emulator (no API server can run here): the
RayJob it creates validates against KubeRay's CRD, and the RayJob's progress - which a test plays KubeRay
for, with the grading job run for real on a local Ray head - flows back into the LabSubmission's status."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import aiohttp
import kopf
import pytest
import yaml

from llmlab import chart, k8s
from llmlab.jobs import client as ray_client
from llmlab.labs import get_lab

pytestmark = pytest.mark.ray
CRDS = (Path(__file__).resolve().parents[2] / "shared" / "schemas" / "crds", chart.CHART / "crds")
NS = "grading"


def _declare(kmock) -> None:
    verbs = {"get", "list", "watch", "create", "update", "patch", "delete"}
    kmock.resources[f"{k8s.GROUP}/{k8s.VERSION}/{k8s.PLURAL}"] = kmock.ResourceInfo(
        kind=k8s.KIND, singular="labsubmission", namespaced=True, verbs=verbs, subresources={"status"})
    kmock.resources["ray.io/v1/rayjobs"] = kmock.ResourceInfo(kind="RayJob", singular="rayjob", namespaced=True,
                                                               verbs=verbs, subresources={"status"})
    # kopf waits for namespaces to be discoverable before it starts watching any namespace
    kmock.resources["v1/namespaces"] = kmock.ResourceInfo(kind="Namespace", namespaced=False, verbs=verbs)


def _submission(name: str, **spec) -> dict:
    return {"apiVersion": f"{k8s.GROUP}/{k8s.VERSION}", "kind": k8s.KIND,
            # what a real API server would add on creation (kopf's patches test resourceVersion)
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "resourceVersion": "1",
                         "creationTimestamp": k8s.now_iso()},
            "spec": {"lab": "m01", "learner": "ada", "source": {"workingDirURI": "s3://bucket/ada-m01.zip"},
                     "resources": {"cpu": 1, "memory": "2Gi"}, **spec}}


async def _eventually(probe, timeout: float = 30):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.2)


@pytest.fixture
async def operator(kmock, monkeypatch):
    """The operator running in this event loop against kmock, watching the namespace NS."""
    import operators.labsubmission  # noqa: F401 - registers the handlers

    _declare(kmock)
    monkeypatch.setenv("LLMLAB_KUBE_SERVER", str(kmock.url))
    settings = kopf.OperatorSettings()
    settings.scanning.disabled = True
    stop = threading.Event()  # kopf runs in its own thread and loop, as in a real deployment
    thread = threading.Thread(target=lambda: asyncio.run(kopf.operator(
        standalone=True, namespaces=[NS], settings=settings, stop_flag=stop)), daemon=True)
    thread.start()

    async def watching():  # create objects only once the operator's watches are open
        watches = kmock[kmock.action.WATCH]
        return (len(watches[kmock.resource(f"{k8s.GROUP}/{k8s.VERSION}/{k8s.PLURAL}")]) > 0
                and len(watches[kmock.resource("ray.io/v1/rayjobs")]) > 0)

    await _eventually(watching)
    yield kmock
    stop.set()
    await asyncio.to_thread(thread.join, 30)  # the loop keeps serving kmock while kopf shuts down
    assert not thread.is_alive(), "the operator did not stop"


async def _api(kmock, method: str, path: str, body: dict | None = None) -> dict:
    async with aiohttp.ClientSession() as s:
        async with s.request(method, str(kmock.url).rstrip("/") + path, json=body) as r:
            assert r.status < 400, (method, path, r.status, await r.text())
            return await r.json(content_type=None)


def _subs_path(name: str = "") -> str:
    return f"/apis/{k8s.GROUP}/{k8s.VERSION}/namespaces/{NS}/{k8s.PLURAL}" + (f"/{name}" if name else "")


def _jobs_path(name: str = "") -> str:
    return f"/apis/ray.io/v1/namespaces/{NS}/rayjobs" + (f"/{name}" if name else "")


def test_labsubmission_crd_and_rayjob_mapping():
    """The CRD validates a LabSubmission; both RayJob modes validate against KubeRay's CRD."""
    sub = _submission("s1", deadlineSeconds=600)
    assert not chart.validate_custom(sub, CRDS)
    bad = _submission("s2")
    bad["spec"]["lab"] = "m99"
    assert chart.validate_custom(bad, CRDS)
    for cluster in ({}, {"name": "llmlab-ray"}):
        job = k8s.rayjob_manifest(_submission("s3", cluster=cluster, deadlineSeconds=300))
        assert not chart.validate_custom(job, CRDS), chart.validate_custom(job, CRDS)[:3]
        spec = job["spec"]
        assert spec["entrypoint"] == "python -m llmlab.jobs.grade_job m01 submission --learner ada"
        assert yaml.safe_load(spec["runtimeEnvYAML"]) == {"working_dir": "s3://bucket/ada-m01.zip"}
        assert spec["activeDeadlineSeconds"] == 300 and "shutdownAfterJobFinishes" in spec
        if cluster:
            assert spec["clusterSelector"] == {"ray.io/cluster": "llmlab-ray"} and not spec["shutdownAfterJobFinishes"]
        else:
            assert spec["shutdownAfterJobFinishes"] and spec["ttlSecondsAfterFinished"] > 0 and "rayClusterSpec" in spec


async def test_submission_becomes_a_rayjob_and_its_result_comes_back(operator, ray_address, tmp_path):
    kmock = operator
    await _api(kmock, "POST", _subs_path(), _submission("ada-m01", cluster={"name": "llmlab-ray"}))
    job = await _eventually(lambda: _get_or_none(kmock, _jobs_path("grade-ada-m01")))
    assert job["metadata"]["ownerReferences"][0]["name"] == "ada-m01"  # adopted: deleted with its owner
    assert not chart.validate_custom({k: v for k, v in job.items() if k != "status"}, CRDS)
    sub = await _api(kmock, "GET", _subs_path("ada-m01"))
    assert sub["status"]["phase"] == "Pending" and sub["status"]["rayJob"] == "grade-ada-m01"

    # play KubeRay: run the grading as the Ray job the RayJob names, on a real local Ray head
    ref = get_lab("m01").write_submission(tmp_path / "submission.py", bug="svd_ascending")
    job_id = job["spec"]["jobId"]
    await asyncio.to_thread(ray_client.submit_grading, "m01", ref, address=ray_address, learner="ada", job_id=job_id)
    await _api(kmock, "PATCH", _jobs_path("grade-ada-m01") + "/status",
               {"status": {"jobStatus": "RUNNING", "jobDeploymentStatus": "Running", "startTime": k8s.now_iso()}})
    await _eventually(lambda: _phase(kmock, "ada-m01", "Running"))
    assert await asyncio.to_thread(ray_client.wait, job_id, ray_address, 300) == "SUCCEEDED"
    await _api(kmock, "PATCH", _jobs_path("grade-ada-m01") + "/status",
               {"status": {"jobStatus": "SUCCEEDED", "jobDeploymentStatus": "Complete", "jobId": job_id,
                           "dashboardURL": ray_address.removeprefix("http://"), "endTime": k8s.now_iso()}})
    sub = await _eventually(lambda: _phase(kmock, "ada-m01", "Succeeded"))
    assert sub["status"]["score"] == 9 and sub["status"]["maxScore"] == 14
    assert sub["status"]["result"]["learner"] == "ada" and sub["status"]["finishedAt"]


async def test_deadline_and_deletion(operator):
    kmock = operator
    await _api(kmock, "POST", _subs_path(), _submission("slow", deadlineSeconds=10))
    await _eventually(lambda: _get_or_none(kmock, _jobs_path("grade-slow")))
    sub = await _eventually(lambda: _phase(kmock, "slow", "DeadlineExceeded"), timeout=40)
    assert "not graded within 10s" in sub["status"]["message"]
    assert await _get_or_none(kmock, _jobs_path("grade-slow")) is None  # the RayJob was removed
    # deleting a LabSubmission deletes its RayJob (the finalizer's handler)
    await _api(kmock, "POST", _subs_path(), _submission("late"))
    await _eventually(lambda: _get_or_none(kmock, _jobs_path("grade-late")))
    await _api(kmock, "DELETE", _subs_path("late"))
    await _eventually(lambda: _gone(kmock, _jobs_path("grade-late")))


async def _get_or_none(kmock, path: str):
    async with aiohttp.ClientSession() as s:
        async with s.get(str(kmock.url).rstrip("/") + path) as r:
            return await r.json(content_type=None) if r.status == 200 else None


async def _gone(kmock, path: str) -> bool:
    return await _get_or_none(kmock, path) is None


async def _phase(kmock, name: str, phase: str):
    sub = await _get_or_none(kmock, _subs_path(name))
    return sub if sub and (sub.get("status") or {}).get("phase") == phase else None
