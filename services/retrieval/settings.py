"""Retrieval service settings, from the environment (``LLMLAB_RETRIEVAL_*``) or arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class RetrievalSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLMLAB_RETRIEVAL_", extra="forbid")

    data_dir: Path  # the store: docs.sqlite and index snapshots (a volume in Kubernetes)
    index: Literal["flat", "hnsw", "ivf_flat", "ivf_pq"] = "hnsw"
    hnsw_m: int = Field(32, ge=4, le=128)
    ef_construction: int = Field(200, ge=8)
    ef_search: int = Field(64, ge=1)  # hnsw
    nlist: int = Field(1024, ge=1)  # ivf: trained on the documents present at the first build
    nprobe: int = Field(16, ge=1)  # ivf
    pq_bytes: int = Field(48, ge=1)  # ivf_pq
    model: Path | None = None  # a sentence-transformers folder; default: all-MiniLM-L6-v2 from its wheel
    served_model_name: str = "all-MiniLM-L6-v2"
    max_k: int = Field(100, ge=1)
    max_batch: int = Field(64, ge=1)  # texts per embeddings request, documents per add
    max_text_chars: int = Field(8192, ge=1)
    max_inflight: int = Field(16, ge=1)  # requests being served at once; beyond: 429 with Retry-After
    faiss_threads: int = Field(1, ge=1)  # OpenMP threads per search: concurrency comes from requests
    torch_threads: int = Field(1, ge=1)
    snapshot_every: int = Field(1000, ge=1)  # changes between index snapshots
    canary_queries: int = Field(20, ge=0)  # stored vectors searched against exact search for the recall gauge
    canary_every_s: float = Field(60.0, gt=0)
    api_key: SecretStr | None = None  # required for document writes and rebuilds when set
