"""What a request asks for (sampling parameters, validated as vLLM does) and what the engine tracks of it."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import torch

_ids = itertools.count()

GREEDY_BELOW = 1e-5  # vLLM's _SAMPLING_EPS
MAX_STOP_STRINGS, MAX_STOP_CHARS = 16, 256


@dataclass
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    logprobs: int | None = None  # also return this many top alternatives per token (0: the chosen one only)

    def validate(self) -> None:
        """Raise ValueError for a parameter no request may have (the service answers 400)."""
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        if not self.temperature >= 0 or self.temperature == float("inf"):
            raise ValueError("temperature must be a finite number >= 0")
        if 0 < self.temperature < GREEDY_BELOW:  # 1/T overflows: below vLLM's epsilon, greedy (as vLLM does)
            self.temperature = 0.0
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise ValueError("seed must be in [0, 2^63)")
        if len(self.stop) > MAX_STOP_STRINGS or any(not s or len(s) > MAX_STOP_CHARS for s in self.stop):
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings of 1 to {MAX_STOP_CHARS} characters")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError("top_k must be >= 1")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.min_p is not None and not 0 <= self.min_p <= 1:
            raise ValueError("min_p must be in [0, 1]")
        if self.logprobs is not None and not 0 <= self.logprobs <= 20:
            raise ValueError("logprobs must be in [0, 20]")


@dataclass
class Request:
    prompt_ids: list[int]
    params: SamplingParams
    id: str = field(default_factory=lambda: f"req-{next(_ids)}")
    output_ids: list[int] = field(default_factory=list)
    text: str = ""
    logprobs: list[dict] = field(default_factory=list)
    finish_reason: str | None = None
    arrival: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    token_times: list[float] = field(default_factory=list)
    slot: int | None = None
    draft_slot: int | None = None
    generator: torch.Generator | None = None
    prefix_offset: int = 0  # incremental detokenization: output tokens decoded as context for the next ones
    read_offset: int = 0  # output tokens whose text is in ``text``

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def all_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids
