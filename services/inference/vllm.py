"""The inference service on vLLM: its settings (``InferenceSettings``, as for the builtin engine) become
``vllm serve`` arguments - the same mapping the Helm chart renders - and ``launch`` hands the process over.

vLLM cannot be installed on CPU machines (its wheel pins a CUDA torch), so this is tested by contract: the
arguments equal the chart's for the same settings, and the speculative config JSON equals the values.
"""

from __future__ import annotations

import json
import os
import shutil

from services.inference.settings import InferenceSettings


class VLLMUnavailable(RuntimeError):
    pass


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


def command(settings: InferenceSettings, host: str, port: int) -> list[str]:
    """``vllm serve`` with the service's settings (the model folder's context length unless set)."""
    spec = None
    if settings.draft_model or settings.ngram:
        spec = speculative_config("ngram" if settings.ngram else "draft_model", settings.spec_tokens,
                                  str(settings.draft_model) if settings.draft_model else None, settings.ngram)
    max_len = settings.max_model_len
    if max_len is None:
        config = json.loads((settings.model / "config.json").read_text())
        max_len = config.get("max_position_embeddings") or config.get("n_positions", 2048)  # Llama / GPT-2
    return ["vllm", "serve", *vllm_serve_args(str(settings.model),
                                              served_model_name=settings.served_model_name or settings.model.name,
                                              max_model_len=max_len, port=port, host=host,
                                              gpu_memory_utilization=settings.gpu_memory_utilization,
                                              download_dir=settings.download_dir, speculative=spec,
                                              dtype=settings.dtype)]


def launch(settings: InferenceSettings, host: str, port: int) -> None:
    """Replace this process by ``vllm serve`` (vLLM reads the API key from VLLM_API_KEY)."""
    exe = shutil.which("vllm")
    if exe is None:
        raise VLLMUnavailable("vLLM is not installed here (it needs a CUDA GPU node); use the builtin engine")
    env = dict(os.environ)
    if settings.api_key:
        env["VLLM_API_KEY"] = settings.api_key.get_secret_value()
    os.execve(exe, [exe, *command(settings, host, port)[1:]], env)
