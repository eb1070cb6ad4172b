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

from llmlab import chart

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
    assert {"RayCluster", "ServiceMonitor", "PrometheusRule"} <= seen


def test_crd_validation_catches_a_wrong_field(rendered):
    ray = next(d for d in rendered["minimal-cpu"] if d["kind"] == "RayCluster")
    ray["spec"]["headGroupSpec"]["rayStartParam"] = {}  # a typo of rayStartParams
    assert any("rayStartParam" in e for e in chart.validate_custom(ray, CRDS))


def _pods(docs):
    for d in docs:
        if d["kind"] == "Deployment":
            yield d["metadata"]["name"], d["spec"]["template"]["spec"]
        elif d["kind"] == "Pod":
            yield d["metadata"]["name"], d["spec"]
        elif d["kind"] == "RayCluster":
            yield d["metadata"]["name"] + "/head", d["spec"]["headGroupSpec"]["template"]["spec"]
            for g in d["spec"]["workerGroupSpecs"]:
                yield d["metadata"]["name"] + "/" + g["groupName"], g["template"]["spec"]


def test_labels_security_images_and_probes(rendered):
    for docs in rendered.values():
        for d in docs:
            labels = d["metadata"]["labels"]
            for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                        "app.kubernetes.io/managed-by", "app.kubernetes.io/component", "helm.sh/chart"):
                assert key in labels, (d["kind"], d["metadata"]["name"], key)
        for name, spec in _pods(docs):
            psc = spec["securityContext"]
            assert psc["runAsNonRoot"] is True and psc["seccompProfile"]["type"] == "RuntimeDefault", name
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
    assert rules and rules[0]["spec"] == generated
    boards = [d for d in full if d["kind"] == "ConfigMap" and d["metadata"]["labels"].get("grafana_dashboard") == "1"]
    assert len(boards) == 3
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
                {"grader": {"replicas": 0}}, {"surprise": True}):
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
