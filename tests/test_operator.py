"""The LabSubmission operator against kmock, a Kubernetes API emulator (no API server can run here): the
RayJob it creates validates against KubeRay's CRD, and the RayJob's progress - which a test plays KubeRay
for, with the grading job run for real on a local Ray head - flows back into the LabSubmission's status.
Last, the whole Kubernetes path: the grading service in Kubernetes mode creates the LabSubmission, Ray
fetches the submission from the service's signed source link, and the grade lands in the service."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from pathlib import Path

import aiohttp
import httpx
import kopf
import pytest
import yaml

from llmlab.platform import chart, k8s
from llmlab.platform.jobs import client as ray_client
from tests.conftest import free_port, m01_source, serve_grader

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
        assert spec["entrypoint"] == "python -m llmlab.platform.jobs.grade_job m01 submission --learner ada"
        assert yaml.safe_load(spec["runtimeEnvYAML"]) == {"working_dir": "s3://bucket/ada-m01.zip"}
        assert spec["activeDeadlineSeconds"] == 300 and "shutdownAfterJobFinishes" in spec
        if cluster:
            assert spec["clusterSelector"] == {"ray.io/cluster": "llmlab-ray"} and not spec["shutdownAfterJobFinishes"]
        else:
            assert spec["shutdownAfterJobFinishes"] and spec["ttlSecondsAfterFinished"] > 0 and "rayClusterSpec" in spec


@pytest.mark.sandbox
async def test_submission_becomes_a_rayjob_and_its_result_comes_back(operator, ray_address, tmp_path):
    kmock = operator
    name = f"ada-m01-{uuid.uuid4().hex[:6]}"  # its Ray job id is fixed by the name: unique on a reused Ray head
    await _api(kmock, "POST", _subs_path(), _submission(name, cluster={"name": "llmlab-ray"}))
    job = await _eventually(lambda: _get_or_none(kmock, _jobs_path(f"grade-{name}")))
    assert job["metadata"]["ownerReferences"][0]["name"] == name  # adopted: deleted with its owner
    assert not chart.validate_custom({k: v for k, v in job.items() if k != "status"}, CRDS)
    # the operator writes the status after creating the RayJob: wait for it rather than race it
    sub = await _eventually(lambda: _phase(kmock, name, "Pending"))
    assert sub["status"]["phase"] == "Pending" and sub["status"]["rayJob"] == f"grade-{name}"

    # play KubeRay: run the grading as the Ray job the RayJob names, on a real local Ray head
    ref = tmp_path / "submission.py"
    ref.write_text(m01_source("svd_ascending"))
    job_id = job["spec"]["jobId"]
    await asyncio.to_thread(ray_client.submit_grading, "m01", ref, address=ray_address, learner="ada", job_id=job_id)
    await _api(kmock, "PATCH", _jobs_path(f"grade-{name}") + "/status",
               {"status": {"jobStatus": "RUNNING", "jobDeploymentStatus": "Running", "startTime": k8s.now_iso()}})
    await _eventually(lambda: _phase(kmock, name, "Running"))
    assert await asyncio.to_thread(ray_client.wait, job_id, ray_address, 300) == "SUCCEEDED"
    await _api(kmock, "PATCH", _jobs_path(f"grade-{name}") + "/status",
               {"status": {"jobStatus": "SUCCEEDED", "jobDeploymentStatus": "Complete", "jobId": job_id,
                           "dashboardURL": ray_address.removeprefix("http://"), "endTime": k8s.now_iso()}})
    sub = await _eventually(lambda: _phase(kmock, name, "Succeeded"))
    assert sub["status"]["score"] == 5 and sub["status"]["maxScore"] == 14
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


async def _play_kuberay(kmock, job: dict, ray_address: str) -> None:
    """What KubeRay does for a RayJob in HTTPMode, against the real local Ray head: submit the entrypoint with
    the runtime env under the job id, and report the job's progress in the RayJob's status."""
    spec, path = job["spec"], _jobs_path(job["metadata"]["name"])
    ray = ray_client.connect(ray_address)
    await asyncio.to_thread(ray.submit_job, entrypoint=spec["entrypoint"], submission_id=spec["jobId"],
                            runtime_env=yaml.safe_load(spec["runtimeEnvYAML"]), metadata=spec["metadata"],
                            entrypoint_num_cpus=spec["entrypointNumCpus"])
    await _api(kmock, "PATCH", path + "/status", {"status": {"jobStatus": "RUNNING", "jobDeploymentStatus": "Running",
                                                             "startTime": k8s.now_iso()}})
    status = await asyncio.to_thread(ray_client.wait, spec["jobId"], ray_address, 300)
    await _api(kmock, "PATCH", path + "/status", {"status": {
        "jobStatus": status, "jobDeploymentStatus": "Complete", "jobId": spec["jobId"],
        "dashboardURL": ray_address.removeprefix("http://"), "endTime": k8s.now_iso()}})


@pytest.mark.sandbox
async def test_grading_service_in_kubernetes_mode(operator, ray_address, tmp_path):
    """POST to the service -> LabSubmission -> RayJob -> Ray fetches the source link -> grade in the service."""
    kmock, port = operator, free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "LLMLAB_GRADER_DATABASE_URL": f"sqlite:///{tmp_path / 'g.sqlite'}",
           "LLMLAB_GRADER_FILES_DIR": str(tmp_path / "files"), "LLMLAB_GRADER_RECONCILE_INTERVAL_S": "0.3",
           "LLMLAB_GRADER_BACKEND": "kubernetes", "LLMLAB_GRADER_KUBE_SERVER": str(kmock.url),
           "LLMLAB_GRADER_KUBE_NAMESPACE": NS, "LLMLAB_GRADER_RAY_CLUSTER": "llmlab-ray",
           "LLMLAB_GRADER_SOURCE_BASE_URL": base, "LLMLAB_GRADER_SOURCE_SIGNING_KEY": "test-signing-key-0123456789"}
    from llmlab.platform.submissions import Store

    token = Store(env["LLMLAB_GRADER_DATABASE_URL"], tmp_path / "files").add_learner("ada")
    proc = await asyncio.to_thread(serve_grader, port, env)
    try:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}) as http:
            r = await http.post("/v1/submissions", data={"lab": "m01"},
                                files={"file": ("mine.py", m01_source("svd_ascending"))})
            assert r.status_code == 202, r.text
            sid, name = r.json()["id"], f"llmlab-grade-{r.json()['id']}"
            sub = await _eventually(lambda: _get_or_none(kmock, _subs_path(name)))
            assert not chart.validate_custom(sub, CRDS)
            assert sub["spec"]["cluster"] == {"name": "llmlab-ray"} and sub["spec"]["learner"] == "ada"
            uri = sub["spec"]["source"]["workingDirURI"]
            assert uri.startswith(f"{base}/v1/sources/{sid}.zip?expires=")
            # a real API server stamps these on creation; kmock does not, and kopf's patches need them
            await _api(kmock, "PATCH", _subs_path(name), {"metadata": {
                "uid": f"uid-{sid}", "resourceVersion": "1", "creationTimestamp": k8s.now_iso()}})
            # the link is signed: a tampered signature or another submission's id gets nothing
            assert (await http.get(uri.replace("sig=", "sig=0"))).status_code == 403
            assert (await http.get(uri.replace(sid, "0" * 32))).status_code == 403

            job = await _eventually(lambda: _get_or_none(kmock, _jobs_path(k8s.rayjob_name(name))))
            await _play_kuberay(kmock, job, ray_address)  # Ray downloads the working dir from the source link
            t_end = time.monotonic() + 60
            while (mine := (await http.get(f"/v1/submissions/{sid}")).json())["state"] not in ("graded", "failed"):
                assert time.monotonic() < t_end, mine
                await asyncio.sleep(0.3)
            assert mine["state"] == "graded" and (mine["score"], mine["max_score"]) == (5, 14), mine
            assert (await _get_or_none(kmock, _subs_path(name)))["status"]["phase"] == "Succeeded"
    finally:
        proc.kill()
        await asyncio.to_thread(proc.wait)


def test_kubernetes_backend_maps_labsubmission_phases(tmp_path):
    """Each LabSubmission phase becomes the service's grading state. The API is a stub here (the phases come
    from the operator, tested above); a dict stands in for the objects the API server would hold."""
    from llmlab.platform.submissions import KubernetesBackend, SourceLinks
    from services.grader.settings import GraderSettings

    class Stub:
        objects: dict = {}

        def create_labsubmission(self, namespace, body):
            if body["metadata"]["name"] in self.objects:
                raise k8s.KubeError(409, "exists")
            self.objects[body["metadata"]["name"]] = body
            return body

        def get_labsubmission(self, namespace, name):
            if name not in self.objects:
                raise k8s.KubeError(404, "not found")
            return self.objects[name]

    kube = Stub()
    links = SourceLinks("http://grader:8000", "k" * 32, ttl_s=60)
    backend = KubernetesBackend(kube, NS, links, deadline_seconds=120)
    backend.dispatch("llmlab-grade-1", "1", "m01", tmp_path, "ada")
    backend.dispatch("llmlab-grade-1", "1", "m01", tmp_path, "ada")  # a second dispatch finds the first
    assert kube.objects["llmlab-grade-1"]["spec"]["deadlineSeconds"] == 120
    assert not chart.validate_custom(kube.objects["llmlab-grade-1"], CRDS)
    assert backend.poll("llmlab-grade-1").state == "running"
    checks = [{"name": "a", "points": 3, "max_points": 3, "passed": True},
              {"name": "b", "points": 0, "max_points": 11, "passed": False}]
    result = {"lab": "m01", "learner": "ada", "submission_sha256": "0" * 64, "seed": 0, "checks": checks, "score": 3,
              "max_score": 14, "limits": {"call_timeout_s": 1, "total_timeout_s": 9, "memory_mb": 512},
              "started_at": k8s.now_iso(), "duration_s": 1.0, "environment": {}}
    for phase, status, state, reason in (
            ("Running", {}, "running", ""), ("Succeeded", {"result": result}, "succeeded", ""),
            ("Succeeded", {}, "failed", "no_result"), ("Failed", {"message": "boom"}, "failed", "job_failed"),
            ("DeadlineExceeded", {}, "failed", "deadline_exceeded")):
        kube.objects["llmlab-grade-1"]["status"] = {"phase": phase, **status}
        poll = backend.poll("llmlab-grade-1")
        assert (poll.state, poll.reason) == (state, reason), phase
    assert backend.poll("llmlab-grade-1").message == "not graded before the deadline"
    assert backend.poll("llmlab-grade-gone").reason == "job_stopped"
    # links: valid until they expire, bound to one submission
    url = links.url("abc")
    expires, sig = int(url.split("expires=")[1].split("&")[0]), url.split("sig=")[1]
    assert links.verify("abc", expires, sig) and not links.verify("abd", expires, sig)
    old = links.url("abc", now=time.time() - 3600)
    assert not links.verify("abc", int(old.split("expires=")[1].split("&")[0]), old.split("sig=")[1])
    with pytest.raises(ValueError, match="source_base_url"):
        GraderSettings(backend="kubernetes")


async def test_kube_client_uses_kubeconfig_contexts(kmock, tmp_path, monkeypatch):
    """The official client as kubectl users expect: a kubeconfig's named context (its current one points at
    nothing), the user's token, and the API's errors (404, 409) as KubeError. kmock is the API server."""
    _declare(kmock)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "nowhere",
              "clusters": [{"name": "emu", "cluster": {"server": str(kmock.url).rstrip("/")}},
                           {"name": "off", "cluster": {"server": "http://127.0.0.1:9"}}],
              "users": [{"name": "ada", "user": {"token": "t0ken"}}],
              "contexts": [{"name": "emulator", "context": {"cluster": "emu", "user": "ada"}},
                           {"name": "nowhere", "context": {"cluster": "off", "user": "ada"}}]}
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    kube = k8s.KubeClient(kubeconfig=str(path), context="emulator")
    assert kube.api.api_client.configuration.host == str(kmock.url).rstrip("/")
    body = k8s.labsubmission_manifest("one", NS, lab="m01", learner="ada", working_dir_uri="s3://b/x.zip")
    await asyncio.to_thread(kube.create_labsubmission, NS, body)
    assert (await asyncio.to_thread(kube.get_labsubmission, NS, "one"))["spec"]["learner"] == "ada"
    assert [s["metadata"]["name"] for s in await asyncio.to_thread(kube.list_labsubmissions, NS)] == ["one"]
    with pytest.raises(k8s.KubeError) as missing:
        await asyncio.to_thread(kube.get_labsubmission, NS, "two")
    assert missing.value.status == 404
    requests = kmock[kmock.resource(f"{k8s.GROUP}/{k8s.VERSION}/{k8s.PLURAL}")]
    assert all(r.headers.get("Authorization") == "Bearer t0ken" for r in requests)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    with pytest.raises(k8s.KubeError, match="no Kubernetes credentials"):
        k8s.KubeClient()


def test_crd_and_service_share_the_name_patterns():
    """The LabSubmission CRD refuses what the grading service refuses: one pattern for lab ids and learners."""
    from llmlab.labs import LAB_PATTERN
    from llmlab.platform.submissions import NAME_PATTERN

    crd = yaml.safe_load((chart.CHART / "crds" / "labsubmissions.llmlab.dev.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert spec["lab"]["pattern"] == LAB_PATTERN and spec["learner"]["pattern"] == NAME_PATTERN
    bad = k8s.labsubmission_manifest("x", NS, lab="m01", learner="Ada Lovelace", working_dir_uri="s3://b/x.zip")
    assert chart.validate_custom(bad, CRDS)  # refused by the schema
