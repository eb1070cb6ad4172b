"""llmlab's serving settings as vLLM's ``vllm serve`` arguments: the same mapping the Helm chart renders.

vLLM cannot be installed on CPU machines (its wheel pins a CUDA torch), so this is tested by contract: the
arguments equal the chart's for the same settings, and the speculative config JSON equals the values.
"""

from __future__ import annotations

import json


def speculative_config(method: str, spec_tokens: int, draft_model: str | None = None,
                       ngram: tuple[int, int] | None = None) -> dict:
    """vLLM's --speculative-config: {"method": "draft_model" | "ngram", "num_speculative_tokens": k, ...}."""
    if method == "ngram":
        hi, lo = ngram or (4, 2)
        return {"method": "ngram", "num_speculative_tokens": spec_tokens, "prompt_lookup_max": hi,
                "prompt_lookup_min": lo}
    if method == "draft_model":
        if not draft_model:
            raise ValueError("draft_model speculation needs a draft model")
        return {"method": "draft_model", "num_speculative_tokens": spec_tokens, "model": draft_model}
    raise ValueError("method must be draft_model or ngram")


def vllm_serve_args(model: str, *, served_model_name: str, max_model_len: int, port: int = 8000,
                    host: str = "0.0.0.0", gpu_memory_utilization: float = 0.9, download_dir: str | None = None,
                    speculative: dict | None = None, dtype: str | None = None) -> list[str]:
    """``vllm serve`` positional model and flags, in the chart's order."""
    args = [model, f"--host={host}", f"--port={port}", f"--served-model-name={served_model_name}",
            f"--max-model-len={max_model_len}", f"--gpu-memory-utilization={gpu_memory_utilization}"]
    if download_dir:
        args.append(f"--download-dir={download_dir}")
    if dtype:
        args.append(f"--dtype={dtype}")
    if speculative:
        args.append(f"--speculative-config={json.dumps(speculative, separators=(',', ':'), sort_keys=True)}")
    return args
