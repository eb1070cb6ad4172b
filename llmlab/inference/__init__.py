"""llmlab's builtin inference engine (KV cache, continuous batching, speculative decoding) and quantization."""

from llmlab.inference.engine import Engine, Request, SamplingParams, SpecStats, expected_tokens_per_step

__all__ = ["Engine", "Request", "SamplingParams", "SpecStats", "expected_tokens_per_step"]
