"""Offline checks of the Helm chart (``charts/llmlab``): render with Helm's own engine (helm-python-sdk),
and validate custom resources against their CRDs' openAPIV3Schema with jsonschema (kubernetes-validate,
used for the built-in kinds, passes unknown kinds silently)."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "llmlab"
BUILTIN_GROUPS = ("v1", "apps/v1", "policy/v1", "networking.k8s.io/v1", "rbac.authorization.k8s.io/v1",
                  "batch/v1", "apiextensions.k8s.io/v1")


def render(values: dict | None = None, name: str = "demo", namespace: str = "llmlab") -> list[dict]:
    """Every manifest the chart renders for ``values`` (templates and tests; NOTES.txt left out)."""
    import helm_python

    with helm_python.Chart.load(str(CHART)) as chart:
        out = chart.render(values or {}, name=name, namespace=namespace, is_install=True)
    return [doc for path, text in sorted(out.items()) if path.endswith((".yaml", ".yml"))
            for doc in yaml.safe_load_all(text) if doc]


def scenario(name: str) -> dict:
    return yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text()) or {}


def merged_values(values: dict) -> dict:
    """values.yaml with ``values`` merged over it, as Helm merges them (maps deeply, everything else replaced)."""
    def merge(base, over):
        if isinstance(base, dict) and isinstance(over, dict):
            return {k: merge(base.get(k), over[k]) if k in over else base[k] for k in {*base, *over}}
        return copy.deepcopy(over)

    return merge(yaml.safe_load((CHART / "values.yaml").read_text()), values)


def scenarios() -> list[str]:
    return sorted(p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*-values.yaml"))


def _strict(schema: dict) -> dict:
    """Reject fields a CRD does not declare (the API server would prune them silently): add
    additionalProperties: false wherever properties are listed and unknown fields are not preserved."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


@cache
def crd_schemas(crd_dirs: tuple[Path, ...]) -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> strict openAPIV3Schema, from CRD files in ``crd_dirs``."""
    out = {}
    for d in crd_dirs:
        for path in sorted(Path(d).glob("*.yaml")):
            for crd in yaml.safe_load_all(path.read_text()):
                if not crd or crd.get("kind") != "CustomResourceDefinition":
                    continue
                group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
                for version in crd["spec"]["versions"]:
                    out[(f"{group}/{version['name']}", kind)] = _strict(version["schema"]["openAPIV3Schema"])
    return out


def validate_custom(doc: dict, crd_dirs: tuple[Path, ...]) -> list[str]:
    """Schema errors of one custom resource ("no CRD" when its kind is unknown)."""
    import jsonschema

    schema = crd_schemas(crd_dirs).get((doc["apiVersion"], doc["kind"]))
    if schema is None:
        return [f"no CRD for {doc['apiVersion']} {doc['kind']}"]
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.path)))]
