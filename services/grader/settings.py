"""Grading service settings, from the environment (``LLMLAB_GRADER_*``) or arguments; unknown keys rejected."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("llmlab")) / "grader"


class GraderSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLMLAB_GRADER_", extra="forbid")

    database_url: str = ""  # default: SQLite under files_dir's parent
    files_dir: Path = _data_dir() / "files"
    backend: Literal["ray", "kubernetes"] = "ray"
    ray_address: str | None = None  # ray: the Ray dashboard address; default: the local head, started on demand
    # kubernetes: grading through LabSubmission resources, which the operator runs as KubeRay RayJobs
    kube_server: str | None = None  # an API server URL; default: in-cluster, else the kubeconfig
    kube_config: str | None = None  # a kubeconfig file (default: $KUBECONFIG, ~/.kube/config)
    kube_context: str | None = None  # a kubeconfig context (default: its current one)
    kube_namespace: str = "default"
    ray_cluster: str = ""  # the RayCluster LabSubmissions name; empty: the operator's default
    source_base_url: str = ""  # how Ray pods reach this service, e.g. http://llmlab-grader.llmlab.svc:8000
    source_signing_key: SecretStr = SecretStr("")
    grading_deadline_seconds: int = 900
    max_upload_bytes: int = 2 * 2**20
    rate_limit_per_minute: int = 10
    token_ttl_days: int = 90  # tokens expire; `llmlab learners token NAME --rotate` or POST /v1/tokens/rotate
    reconcile_interval_s: float = 1.0

    @model_validator(mode="after")
    def _kubernetes_needs_sources(self):
        if self.backend == "kubernetes" and not (self.source_base_url and self.source_signing_key.get_secret_value()):
            raise ValueError("the kubernetes backend needs source_base_url and source_signing_key "
                             "(LLMLAB_GRADER_SOURCE_BASE_URL, LLMLAB_GRADER_SOURCE_SIGNING_KEY)")
        return self

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.files_dir.parent / 'grader.sqlite'}"
