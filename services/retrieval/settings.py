"""Retrieval service settings, from the environment (``LLMLAB_RETRIEVAL_*``) or arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AnyHttpUrl, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class RetrievalSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLMLAB_RETRIEVAL_", extra="forbid")

    data_dir: Path | None = None  # the store: docs.sqlite and index snapshots (a volume in Kubernetes)
    # or, instead of a store, the shards' URLs: the service routes (searches fan out to every shard and their
    # top k merge; writes go round robin; ids are global), as the chart's router does over the StatefulSet
    shards: list[AnyHttpUrl] = Field(default_factory=list, max_length=64)
    shard_timeout_s: float = Field(10.0, gt=0)
    index: Literal["flat", "hnsw", "ivf_flat", "ivf_pq", "ivf_pq_refine"] = "hnsw"
    hnsw_m: int = Field(32, ge=4, le=128)
    ef_construction: int = Field(200, ge=8)
    ef_search: int = Field(64, ge=1)  # hnsw
    nlist: int = Field(1024, ge=1)  # ivf: trained on the documents present at the first build
    nprobe: int = Field(16, ge=1)  # ivf
    pq_bytes: int = Field(48, ge=1)  # ivf_pq
    refine_factor: int = Field(4, ge=1)  # ivf_pq_refine: candidates re-ranked by 8-bit vectors per result
    model: Path | None = None  # a sentence-transformers folder; default: all-MiniLM-L6-v2 from its wheel
    served_model_name: str = "all-MiniLM-L6-v2"
    # bf16 autocast for batches of 64+ tokens (LLMLAB_RETRIEVAL_BF16=1): ~2.5x faster on an AMX CPU, but a document's
    # vector then depends on the batch it was padded in (scores move by up to ~3e-4); off, a vector is its own
    bf16: bool = False
    max_k: int = Field(100, ge=1)
    max_batch: int = Field(64, ge=1)  # texts per embeddings request, documents per add
    max_text_chars: int = Field(8192, ge=1)
    max_inflight: int = Field(16, ge=1)  # requests being served at once; beyond: 429 with Retry-After
    faiss_threads: int = Field(1, ge=1)  # OpenMP threads per search: concurrency comes from requests
    torch_threads: int = Field(1, ge=1)
    snapshot_every: int = Field(1000, ge=1)  # changes between index snapshots
    canary_queries: int = Field(20, ge=0)  # stored vectors searched against exact search for the recall gauge
    canary_every_s: float = Field(60.0, gt=0)
    api_key: SecretStr | None = None  # required for document writes and rebuilds when set (and sent to shards)

    @model_validator(mode="after")
    def _store_or_shards(self):
        if (self.data_dir is None) == (not self.shards):
            raise ValueError("give exactly one of data_dir (a store) and shards (the URLs of shards to route to)")
        return self
