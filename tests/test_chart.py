"""The Helm chart, with no cluster: Helm's engine lints and renders every scenario; built-in kinds pass
kubernetes-validate --strict for Kubernetes 1.29-1.33; custom resources validate against their CRDs; and
the fields that matter are what the values say."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmlab.platform import chart, dashboards

CRDS = (Path(__file__).resolve().parents[2] / "shared" / "schemas" / "crds",)
SCENARIOS = chart.scenarios()


def test_scenarios_exist():
    assert {"minimal-cpu", "gpu-vllm-spec", "full"} <= set(SCENARIOS)


def test_lint_has_no_errors():
    import helm_python

    for values in [None, *(chart.scenario(s) for s in SCENARIOS)]:
        report = helm_python.lint(str(chart.CHART), values, strict=True)
        errors = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert not errors, errors


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {s: chart.render(chart.scenario(s)) for s in SCENARIOS}


@pytest.mark.parametrize("kube", ["1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0"])
def test_builtin_kinds_validate_strictly(rendered, kube, tmp_path):
    for name, docs in rendered.items():
        builtin = [d for d in docs if d["apiVersion"] in chart.BUILTIN_GROUPS]
        assert builtin
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump_all(builtin))
        r = subprocess.run([str(Path(sys.executable).with_name("kubernetes-validate")), "--strict", "--quiet",
                            "-k", kube, str(path)], capture_output=True, text=True)
        assert r.returncode == 0, f"{name} on {kube}:\n{r.stdout}{r.stderr}"


def test_custom_resources_validate_against_their_crds(rendered):
    seen = set()
    for name, docs in rendered.items():
        for d in docs:
            if d["apiVersion"] not in chart.BUILTIN_GROUPS:
                seen.add(d["kind"])
                errors = chart.validate_custom(d, CRDS)
                assert not errors, (name, d["kind"], errors[:5])
    assert {"RayCluster", "RayJob", "ServiceMonitor", "PrometheusRule", "PodMonitor"} <= seen


def test_crd_validation_catches_a_wrong_field(rendered):
    ray = next(d for d in rendered["minimal-cpu"] if d["kind"] == "RayCluster")
    ray["spec"]["headGroupSpec"]["rayStartParam"] = {}  # a typo of rayStartParams
    assert any("rayStartParam" in e for e in chart.validate_custom(ray, CRDS))


def _pods(docs: list[dict]) -> list[tuple[str, dict, dict]]:
    """(name, pod metadata, pod spec) of every pod template, RayCluster groups included."""
    out = []
    for d in docs:
        spec = d.get("spec", {})
        if d["kind"] in ("Deployment", "StatefulSet"):
            out.append((d["metadata"]["name"], spec["template"].get("metadata", {}), spec["template"]["spec"]))
        elif d["kind"] == "Pod":
            out.append((d["metadata"]["name"], d["metadata"], spec))
        elif d["kind"] == "RayCluster":
            groups = [("head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec["workerGroupSpecs"]]
            out += [(f"{d['metadata']['name']}/{n}", g["template"].get("metadata", {}), g["template"]["spec"])
                    for n, g in groups]
    return out


def test_labels_security_images_and_probes(rendered):
    for docs in rendered.values():
        for d in docs:
            labels = d["metadata"]["labels"]
            for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                        "app.kubernetes.io/managed-by", "app.kubernetes.io/component", "helm.sh/chart"):
                assert key in labels, (d["kind"], d["metadata"]["name"], key)
        for name, meta, spec in _pods(docs):
            psc = spec["securityContext"]
            learner = meta.get("labels", {}).get("llmlab.dev/runs-learner-code") == "true"  # see the sandbox test
            assert psc["runAsNonRoot"] is True and psc["seccompProfile"]["type"] == (
                "Unconfined" if learner else "RuntimeDefault"), name
            for c in spec["containers"]:
                sc = c["securityContext"]
                assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], name
                image = c["image"]
                assert ":" in image and not image.endswith(":latest"), image
                assert c["resources"]["limits"] and c["resources"]["requests"], name
        for d in docs:
            if d["kind"] == "Deployment":
                c = d["spec"]["template"]["spec"]["containers"][0]
                assert "readinessProbe" in c and "livenessProbe" in c


def test_vllm_arguments_and_gpus_follow_the_values(rendered):
    for name in ("gpu-vllm-spec", "full"):
        values = chart.scenario(name)["inference"]
        dep = next(d for d in rendered[name]
                   if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("inference"))
        c = dep["spec"]["template"]["spec"]["containers"][0]
        args = c["args"]
        spec = json.loads(next(a for a in args if a.startswith("--speculative-config=")).split("=", 1)[1])
        s = values["speculative"]
        want = {"method": s["method"], "num_speculative_tokens": s["numSpeculativeTokens"]}
        if s["method"] == "ngram":
            want |= {"prompt_lookup_max": s["promptLookupMax"], "prompt_lookup_min": s["promptLookupMin"]}
        else:
            want["model"] = s["draftModel"]
        assert spec == want
        assert c["resources"]["limits"]["nvidia.com/gpu"] == values.get("gpus", 1)
        assert "startupProbe" in c and c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= 300
        assert c["image"].startswith("vllm/vllm-openai:v")
        ray = next(d for d in rendered[name] if d["kind"] == "RayCluster")
        gpu = next(g for g in ray["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu")
        assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] >= 1
    minimal = rendered["minimal-cpu"]
    assert not any("nvidia.com/gpu" in json.dumps(d) for d in minimal)
    builtin = next(d for d in minimal if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("inference"))
    c = builtin["spec"]["template"]["spec"]["containers"][0]
    assert c["image"].startswith("ghcr.io/llmlab/llmlab:") and c["command"] == ["llmlab"]
    assert c["args"][:2] == ["serve", "inference"] and "--ngram=3,1" in c["args"] and "--spec-tokens=3" in c["args"]
    assert "--compile" in c["args"]
    assert "tolerations" not in builtin["spec"]["template"]["spec"]


def test_observability_objects(rendered):
    full = rendered["full"]
    monitors = [d for d in full if d["kind"] == "ServiceMonitor"]
    assert monitors and all(m["metadata"]["labels"]["release"] == "prometheus" for m in monitors)
    rules = [d for d in full if d["kind"] == "PrometheusRule"]
    generated = yaml.safe_load((Path(chart.CHART) / "files" / "rules" / "grader-slo.rules.yaml").read_text())
    grader = next(r for r in rules if r["metadata"]["name"].endswith("-grader-slo"))
    assert grader["spec"] == generated and any(r["metadata"]["name"].endswith("-drift") for r in rules)
    boards = [d for d in full if d["kind"] == "ConfigMap" and d["metadata"]["labels"].get("grafana_dashboard") == "1"]
    assert len(boards) == len(dashboards.DASHBOARDS)  # every generated dashboard, the RLHF KL tracker's included
    for cm in boards:
        (content,) = cm["data"].values()
        assert json.loads(content)["templating"]["list"][0]["name"] == "datasource"
    svc = next(d for d in full if d["kind"] == "Service" and d["metadata"]["name"].endswith("grader"))
    assert svc["metadata"]["labels"]["llmlab.dev/job"] == "llmlab-grader"  # the job the SLO rules select


def test_learner_code_egress_is_limited_to_the_ray_head(rendered):
    policy = next(d for d in rendered["minimal-cpu"] if d["kind"] == "NetworkPolicy"
                  and d["metadata"]["name"].endswith("learner-code-egress"))
    assert policy["spec"]["policyTypes"] == ["Egress"]
    targets = [rule["to"][0]["podSelector"]["matchLabels"] for rule in policy["spec"]["egress"]]
    assert {"ray.io/node-type": "head", "ray.io/cluster": "demo-llmlab-ray"} in targets
    assert all(t in ({"k8s-app": "kube-dns"}, {"ray.io/node-type": "head", "ray.io/cluster": "demo-llmlab-ray"})
               for t in targets)


def test_helm_test_hook_checks_each_enabled_service(rendered):
    hook = next(d for d in rendered["full"] if d["kind"] == "Pod")
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = hook["spec"]["containers"][0]["args"][0]
    assert "-grader:8000/health" in script and "-inference:8000/health" in script and "/api/version" in script


def test_values_schema_rejects_bad_values():
    import helm_python

    for bad in ({"inference": {"speculative": {"method": "magic"}}}, {"image": {"tag": "latest"}},
                {"grader": {"replicas": 0}}, {"surprise": True}, {"pretrain": {"zeroStage": 4}},
                {"pretrain": {"dataSource": "x'; rm -rf /"}}, {"pretrain": {"modelSize": "7b"}},
                {"rlhf": {"preset": "huge"}}, {"rlhf": {"actorCpus": 0}}, {"rlhf": {"output": {"path": "$(id)"}}},
                {"rlhf": {"enabled": True, "preset": "full", "rolloutWorkers": 6}}):
        with pytest.raises(helm_python.HelmError):
            chart.render(bad)


def test_operator_rbac_is_least_privilege_and_crd_is_valid(rendered, tmp_path):
    docs = rendered["minimal-cpu"]
    assert not any(d["kind"] in ("ClusterRole", "ClusterRoleBinding") for d in docs)
    role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"].endswith("operator"))
    rules = {(r["apiGroups"][0], r["resources"][0]): set(r["verbs"]) for r in role["rules"]}
    assert rules == {("llmlab.dev", "labsubmissions"): {"get", "list", "watch", "patch"},
                     ("llmlab.dev", "labsubmissions/status"): {"get", "patch"},
                     ("ray.io", "rayjobs"): {"get", "list", "watch", "create", "delete"},
                     ("", "events"): {"create"}}
    dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("operator"))
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == role["metadata"]["name"]
    assert dep["spec"]["template"]["spec"]["containers"][0]["args"][:2] == ["serve", "operator"]
    crd = chart.CHART / "crds" / "labsubmissions.llmlab.dev.yaml"
    r = subprocess.run([str(Path(sys.executable).with_name("kubernetes-validate")), "--strict", "--quiet",
                        "-k", "1.29.0", str(crd)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def _env(deployment: dict) -> dict:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_grader_kubernetes_mode(rendered):
    """full: the grader creates LabSubmissions (and only that), signs source links with a kept Secret, and Ray
    pods running learner code may fetch from it; minimal-cpu: Ray mode, no API access at all."""
    full = rendered["full"]
    grader = next(d for d in full if d["kind"] == "Deployment" and d["metadata"]["name"] == "demo-llmlab-grader")
    env = _env(grader)
    assert env["LLMLAB_GRADER_BACKEND"] == "kubernetes" and "LLMLAB_GRADER_RAY_ADDRESS" not in env
    assert env["LLMLAB_GRADER_SOURCE_BASE_URL"] == "http://demo-llmlab-grader.llmlab.svc:8000"
    assert env["LLMLAB_GRADER_RAY_CLUSTER"] == "demo-llmlab-ray"
    secret = env["LLMLAB_GRADER_SOURCE_SIGNING_KEY"]["secretKeyRef"]
    assert any(d["kind"] == "Secret" and d["metadata"]["name"] == secret["name"] for d in full)
    role = next(d for d in full if d["kind"] == "Role" and d["metadata"]["name"] == "demo-llmlab-grader")
    assert role["rules"] == [{"apiGroups": ["llmlab.dev"], "resources": ["labsubmissions"], "verbs": ["get", "create"]}]
    sa = next(d for d in full if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "demo-llmlab-grader")
    assert sa["automountServiceAccountToken"] is True
    egress = next(d for d in full if d["kind"] == "NetworkPolicy"
                  and d["metadata"]["name"].endswith("learner-code-egress"))
    grader_rule = [r for r in egress["spec"]["egress"]
                   if r["to"][0]["podSelector"]["matchLabels"].get("app.kubernetes.io/component") == "grader"]
    assert grader_rule and grader_rule[0]["ports"] == [{"protocol": "TCP", "port": 8000}]

    minimal = rendered["minimal-cpu"]
    grader = next(d for d in minimal if d["kind"] == "Deployment" and d["metadata"]["name"] == "demo-llmlab-grader")
    assert "LLMLAB_GRADER_BACKEND" not in _env(grader) and "LLMLAB_GRADER_RAY_ADDRESS" in _env(grader)
    sa = next(d for d in minimal if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "demo-llmlab-grader")
    assert sa["automountServiceAccountToken"] is False
    assert not any(d["kind"] in ("Role", "Secret") and d["metadata"]["name"].startswith("demo-llmlab-grader")
                   for d in minimal)


def test_kubernetes_mode_needs_the_operator():
    import helm_python

    with pytest.raises(helm_python.HelmError, match="needs operator.enabled"):
        chart.render({"grader": {"backend": "kubernetes"}, "operator": {"enabled": False}})


def test_learner_code_pods_get_the_sandbox_they_need_and_the_result_key(rendered):
    """Pods that run learner code may create user namespaces (bubblewrap: seccomp and AppArmor unconfined,
    nothing else relaxed) and hold the result key; of the others only the grader and the operator do."""
    for name, docs in rendered.items():
        for pod, meta, spec in _pods(docs):
            learner = meta.get("labels", {}).get("llmlab.dev/runs-learner-code") == "true"
            mounts = {m["name"] for c in spec["containers"] for m in c.get("volumeMounts", [])}
            if learner:
                assert spec["securityContext"]["seccompProfile"] == {"type": "Unconfined"}, (name, pod)
                assert spec["securityContext"]["runAsNonRoot"] is True
                assert all(c["securityContext"]["capabilities"] == {"drop": ["ALL"]} and
                           c["securityContext"]["allowPrivilegeEscalation"] is False for c in spec["containers"])
                assert meta["annotations"] == {
                    f"container.apparmor.security.beta.kubernetes.io/{spec['containers'][0]['name']}": "unconfined"}
                assert "result-key" in mounts, (name, pod)
                env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
                assert env["LLMLAB_RESULT_KEY_FILE"] == "/etc/llmlab/result-key/key"
                assert "LLMLAB_INSECURE_NO_SANDBOX" not in env
            else:
                assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, (name, pod)
                holds_key = pod.endswith(("-grader", "-operator"))
                assert ("result-key" in mounts) == holds_key, (name, pod)
        secrets = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-result-key")]
        assert len(secrets) == 1 and len(secrets[0]["data"]["key"]) >= 64


def test_sandbox_values_render():
    docs = chart.render({"sandbox": {"runtimeClassName": "gvisor", "insecureNoSandbox": True,
                                     "bubblewrap": {"enabled": False}}, "resultKeySecret": "mine"})
    workers = [(p, m, s) for p, m, s in _pods(docs) if m.get("labels", {}).get("llmlab.dev/runs-learner-code")]
    assert workers
    for _, meta, spec in workers:
        assert spec["runtimeClassName"] == "gvisor" and not meta.get("annotations")
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
        assert env["LLMLAB_INSECURE_NO_SANDBOX"] == "1"
        assert {"name": "result-key", "secret": {"secretName": "mine", "defaultMode": 0o400}} in spec["volumes"]
    assert not [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-result-key")]
    operator = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator"))
    env = {e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["LLMLAB_RESULT_KEY_SECRET"] == "mine" and env["LLMLAB_SANDBOX_RUNTIME_CLASS"] == "gvisor"
    assert env["LLMLAB_SANDBOX_BUBBLEWRAP"] == "false"


def test_inference_requires_an_api_key_from_a_secret(rendered):
    """The inference pod listens beyond loopback, so both engines get an API key from a Secret."""
    seen = 0
    for name, docs in rendered.items():
        for d in docs:
            if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-inference"):
                container = d["spec"]["template"]["spec"]["containers"][0]
                var = "LLMLAB_INFERENCE_API_KEY" if container["name"] == "llmlab-inference" else "VLLM_API_KEY"
                env = {e["name"]: e for e in container["env"]}
                ref = env[var]["valueFrom"]["secretKeyRef"]
                secret = next(x for x in docs if x["kind"] == "Secret" and x["metadata"]["name"] == ref["name"])
                assert ref["key"] in secret["data"], name
                seen += 1
    assert seen >= 2


def _job_argv(rayjob: dict, module: str) -> list[str]:
    import shlex

    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", module]
    return argv


def _pretrain_config(rayjob: dict) -> dict:
    argv = _job_argv(rayjob, "llmlab.platform.jobs.pretrain_job")
    return json.loads(argv[argv.index("--config-json") + 1])


MODEL_FIELDS = ("d_model", "n_layers", "n_heads", "context", "micro_batch", "lr", "min_lr", "warmup")


def test_pretraining_rayjob_follows_the_values(rendered):
    """The pretraining RayJob's settings are a valid PretrainConfig whose model is llmlab's FULL (70m) or
    QUICK preset; workers, GPUs and the output claim are the values'; the cluster goes when the job ends."""
    from llmlab.distributed.pretrain import FULL, QUICK, PretrainConfig

    assert not any(d["kind"] == "RayJob" for d in rendered["minimal-cpu"])  # off unless asked for
    job = next(d for d in rendered["pretrain"] if d["kind"] == "RayJob")
    cfg = PretrainConfig.from_dict(_pretrain_config(job))
    assert all(getattr(cfg, f) == getattr(FULL, f) for f in MODEL_FIELDS)
    assert (cfg.zero_stage, cfg.bf16, cfg.workers, cfg.gpus_per_worker) == (3, True, 2, 1)
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    group = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 2
    pod = group["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["containers"][0]["image"].endswith("-gpu")
    assert {"name": "output", "persistentVolumeClaim": {"claimName": "llmlab-pretrain-results"}} in pod["volumes"]

    quick = chart.render({"pretrain": {"enabled": True, "modelSize": "quick", "workers": 2, "gpusPerWorker": 0,
                                       "cpusPerWorker": 1, "zeroStage": 2}})
    job = next(d for d in quick if d["kind"] == "RayJob")
    cfg = PretrainConfig.from_dict(_pretrain_config(job))
    assert all(getattr(cfg, f) == getattr(QUICK, f) for f in MODEL_FIELDS) and cfg.zero_stage == 2
    pod = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"] and "tolerations" not in pod
    assert not chart.validate_custom(job, CRDS)


def test_rlhf_rayjob_follows_the_values(rendered):
    """The RLHF RayJob's settings are llmlab's FULL (or QUICK) preset with the values' actors; its driver
    serves the KL tracker on the head pod's rlhf-metrics port, which the PodMonitor scrapes."""
    from dataclasses import replace

    from llmlab.rlhf.run import FULL, QUICK
    from llmlab.rlhf.train import RLHFConfig

    assert not any(d["kind"] in ("RayJob", "PodMonitor") and d["metadata"]["name"].endswith("-rlhf")
                   for d in rendered["full"])  # off unless asked for
    docs = rendered["rlhf"]
    job = next(d for d in docs if d["kind"] == "RayJob")
    argv = _job_argv(job, "llmlab.platform.jobs.rlhf_job")
    cfg = RLHFConfig.from_dict(json.loads(argv[argv.index("--config-json") + 1]))
    assert cfg == replace(FULL, rollout_workers=8, actor_cpus=1)
    assert argv[argv.index("--metrics-addr") + 1] == "0.0.0.0" and job["spec"]["shutdownAfterJobFinishes"] is True
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]
    port = int(argv[argv.index("--metrics-port") + 1])
    assert {"containerPort": port, "name": "rlhf-metrics"} in head["spec"]["containers"][0]["ports"]
    assert {"name": "output", "persistentVolumeClaim": {"claimName": "llmlab-rlhf-results"}} in head["spec"]["volumes"]
    assert job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] == 2
    monitor = next(d for d in docs if d["kind"] == "PodMonitor")
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "rlhf-metrics"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= head["metadata"]["labels"].items()

    quick = chart.render({"rlhf": {"enabled": True, "preset": "quick", "iterations": 7, "rolloutWorkers": 2,
                                   "actorCpus": 0.5}})
    job = next(d for d in quick if d["kind"] == "RayJob")
    argv = _job_argv(job, "llmlab.platform.jobs.rlhf_job")
    cfg = RLHFConfig.from_dict(json.loads(argv[argv.index("--config-json") + 1]))
    assert cfg == replace(QUICK, iterations=7, rollout_workers=2, actor_cpus=0.5)
    assert not any(d["kind"] == "PodMonitor" for d in quick)  # no monitoring stack, no PodMonitor
    assert not chart.validate_custom(job, CRDS)


def test_retrieval_shards_volumes_and_monitoring(rendered):
    full = rendered["full"]
    sts = next(d for d in full if d["kind"] == "StatefulSet" and d["metadata"]["name"].endswith("retrieval"))
    assert sts["spec"]["replicas"] == 2 and sts["spec"]["serviceName"].endswith("retrieval-shards")
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "20Gi"
    c = sts["spec"]["template"]["spec"]["containers"][0]
    assert c["args"][:2] == ["serve", "retrieval"] and "--data=/data" in c["args"] and "--index=hnsw" in c["args"]
    assert {"name": "index", "mountPath": "/data"} in c["volumeMounts"]
    assert c["env"][2]["valueFrom"]["secretKeyRef"]["name"].endswith("retrieval-key")
    services = {d["metadata"]["name"]: d for d in full
                if d["kind"] == "Service" and "retrieval" in d["metadata"]["name"]}
    front, headless = services["demo-llmlab-retrieval"], services["demo-llmlab-retrieval-shards"]
    assert headless["spec"]["clusterIP"] == "None"  # per-shard DNS names
    assert front["metadata"]["labels"]["llmlab.dev/job"] == "llmlab-retrieval"  # the SLO rules' job
    assert headless["metadata"]["labels"]["llmlab.dev/job"] == "llmlab-retrieval-shards"
    pdb = next(d for d in full if d["kind"] == "PodDisruptionBudget" and d["metadata"]["name"].endswith("retrieval"))
    assert pdb["spec"]["maxUnavailable"] == 0  # two shards: each holds documents the other lacks
    # two shards: a router Deployment behind the front Service, fanning out to each shard's DNS name
    router = next(d for d in full if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("retrieval-router"))
    assert front["spec"]["selector"].items() <= router["spec"]["template"]["metadata"]["labels"].items()
    assert not front["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    assert headless["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    rc = router["spec"]["template"]["spec"]["containers"][0]
    assert [a for a in rc["args"] if a.startswith("--shard=")] == [
        f"--shard=http://demo-llmlab-retrieval-{i}.demo-llmlab-retrieval-shards:8000" for i in (0, 1)]
    assert "--data=/data" not in rc["args"] and rc["env"] == c["env"]  # the same key, sent on to the shards
    from services.retrieval.settings import RetrievalSettings  # the router's arguments make valid settings

    urls = [a.split("=", 1)[1] for a in rc["args"] if a.startswith("--shard=")]
    assert len(RetrievalSettings(shards=urls).shards) == 2
    monitor = next(d for d in full if d["kind"] == "ServiceMonitor" and d["metadata"]["name"].endswith("retrieval"))
    assert monitor["spec"]["selector"]["matchExpressions"] == [{"key": "llmlab.dev/job", "operator": "Exists"}]
    policies = {d["metadata"]["name"]: d for d in full if d["kind"] == "NetworkPolicy"}
    egress = policies["demo-llmlab-retrieval-router"]["spec"]["egress"][0]
    assert egress["to"][0]["podSelector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]
    assert "demo-llmlab-retrieval" in policies
    minimal = rendered["minimal-cpu"]
    one = next(d for d in minimal if d["kind"] == "StatefulSet")
    assert one["spec"]["replicas"] == 1
    assert "--index=flat" in one["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not any(d["metadata"]["name"].endswith("router") for d in minimal)  # one shard: no router
    front = next(d for d in minimal if d["kind"] == "Service" and d["metadata"]["name"].endswith("-retrieval"))
    assert front["spec"]["selector"].items() <= one["spec"]["template"]["metadata"]["labels"].items()
    assert "llmlab.dev/job" not in next(d for d in minimal if d["metadata"]["name"].endswith("retrieval-shards")
                                        )["metadata"]["labels"]  # scraped once, through the front Service
