"""Grading service settings, from the environment (``LLMLAB_GRADER_*``) or arguments; unknown keys rejected."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict


def _data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("llmlab")) / "grader"


class GraderSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLMLAB_GRADER_", extra="forbid")

    database_url: str = ""  # default: SQLite under files_dir's parent
    files_dir: Path = _data_dir() / "files"
    backend: Literal["ray"] = "ray"
    ray_address: str | None = None  # default: the local head, started on demand
    max_upload_bytes: int = 2 * 2**20
    rate_limit_per_minute: int = 10
    reconcile_interval_s: float = 1.0

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.files_dir.parent / 'grader.sqlite'}"
