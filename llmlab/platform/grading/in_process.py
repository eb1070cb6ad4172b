"""Grading trusted code in the grader's own process (``grade(..., trusted=True, in_process=True)``)."""

from __future__ import annotations

import hashlib
import importlib.util
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from llmlab.labs.base import CheckFailed
from llmlab.platform.grading import sandbox
from llmlab.platform.grading.runner import SubmissionError


class InProcessBox:
    """Trusted code only (llmlab's seeded bugs and seed sweeps in the tests): the submission imported into
    the grader's own process, its values through the sandbox's own conversion and the grader's restricted
    decoding, without a process, isolation or limits. It spares each grading an interpreter that imports
    torch (about 2 s); the sandbox itself is exercised by the gradings of references, cheats and starters."""

    def __init__(self, submission: Path):
        if submission.is_dir():
            raise ValueError("in-process grading takes a single-file submission")
        self.path, self.proc, self.module = submission, None, None
        self.output: list[str] = []
        self.import_error: str | None = None

    def start(self, deadline: float) -> None:
        name = f"llmlab_in_process_{hashlib.sha256(str(self.path).encode()).hexdigest()[:12]}"
        spec = importlib.util.spec_from_file_location(name, self.path)
        self.module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(self.module)
        except Exception as e:  # a broken trusted submission is reported like any other
            self.import_error = f"the submission failed to import: {sandbox.describe(e)['error']}"
            raise SubmissionError(self.import_error) from None
        self.proc = "in-process"

    def call(self, probe: str | Callable, args: tuple, kwargs: dict, deadline: float) -> Any:
        try:
            value = probe(self.module, *args, **kwargs) if callable(probe) else sandbox.call_by_name(
                self.module, probe, *args, **kwargs)
        except Exception as e:
            raise CheckFailed(sandbox.describe(e)["error"]) from None
        buf = io.BytesIO()
        torch.save(sandbox.to_wire(value), buf)  # what a reply can carry, decoded as the grader decodes it
        return torch.load(io.BytesIO(buf.getvalue()), weights_only=True)

    def stop(self, grace: float = 0.0) -> None:
        self.proc = None
