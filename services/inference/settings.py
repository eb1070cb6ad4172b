"""Inference service settings, from the environment (``LLMLAB_INFERENCE_*``) or arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class InferenceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLMLAB_INFERENCE_", extra="forbid")

    engine: Literal["builtin", "vllm"] = "builtin"
    model: Path  # a Hugging Face folder: llmlab's exports, Llama or GPT-2
    served_model_name: str = ""  # default: the folder's name
    draft_model: Path | None = None  # speculative decoding with a draft model...
    ngram: tuple[int, int] | None = None  # ...or n-gram prompt lookup (max, min)
    spec_tokens: int = 4
    dtype: Literal["float32", "bfloat16"] = "float32"
    device: str = "cpu"  # or cuda, cuda:N
    max_batch: int = 8
    compile: bool = False  # builtin: decode steps through torch.compile, built at startup (vLLM: not --enforce-eager)
    max_waiting: int = 32  # beyond this many waiting requests: 429
    max_prompt_bytes: int = 1_000_000  # a prompt (or all chat messages) over this: 400; a body over twice it: 413
    api_key: SecretStr | None = None
    gpu_memory_utilization: float = 0.9  # vllm only
    max_model_len: int | None = None  # vllm only; default: the model folder's context length
    download_dir: str | None = None  # vllm only
