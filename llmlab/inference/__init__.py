"""llmlab's builtin inference engine, split by role as vLLM's is: ``request`` (sampling parameters and
request state), ``engine`` (the scheduler loop: admission, batched prefill and decode), ``kvcache`` (the
model runner and its KV cache), ``sampler``, ``spec_decode`` (draft or n-gram proposals and the rejection
step), ``detokenizer`` (incremental, with stop strings), ``serving`` (the async front and its metrics,
``metrics``), and ``quant`` (INT8, GPTQ)."""

from llmlab.inference.engine import Engine
from llmlab.inference.request import Request, SamplingParams
from llmlab.inference.spec_decode import SpecStats, expected_tokens_per_step

__all__ = ["Engine", "Request", "SamplingParams", "SpecStats", "expected_tokens_per_step"]
