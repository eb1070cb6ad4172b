"""The lab contract: spec, reference, deliverable, checks with points, seeded bugs.

A lab module builds one :class:`Lab` and registers its checks and bugs on it::

    LAB = Lab("m01", reference="llmlab.linalg", spec=["batched_svd", ...], limits=...)

    @LAB.check(points=2)
    def svd_reconstructs(ctx: CheckContext):
        A = ctx.randn(4, 7, 3)                    # hidden input, drawn in the grader
        U, S, Vh = ctx.call("batched_svd", A)     # runs in the sandbox
        ctx.close(U @ torch.diag_embed(S) @ Vh, A, atol=1e-6, what="U S Vh")

    LAB.bug("svd_unsorted", batched_svd=_svd_unsorted)

Checks run in the grader; only ``ctx.call``/``ctx.run`` cross into the submission's process, carrying
arguments and bringing back values (tensors, numbers, lists/dicts of them).
"""

from __future__ import annotations

import importlib
import inspect
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch


class CheckFailed(AssertionError):
    """A check's verdict: the submission is wrong, with a message for the learner."""


@dataclass(frozen=True)
class LabLimits:
    call_timeout_s: float = 30.0
    total_timeout_s: float = 300.0
    memory_mb: int = 2048
    judge_timeout_s: float = 60.0  # the grader's own judging of one check (trusted side)


@dataclass
class Check:
    name: str
    points: float
    fn: Callable[[CheckContext], None]

    @property
    def description(self) -> str:
        return inspect.getdoc(self.fn) or ""


class CheckContext:
    """What a check sees: a seeded generator for hidden inputs and a line into the submission."""

    def __init__(self, seed: int, caller: Callable[[str, tuple, dict], Any]):
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self._caller = caller

    # --- calling the submission --------------------------------------------------------------------
    def call(self, name: str, *args, **kwargs) -> Any:
        """Call ``submission.<name>(*args, **kwargs)`` in the sandbox and return its value."""
        return self._caller(name, args, kwargs)

    def run(self, probe: Callable, *args, **kwargs) -> Any:
        """Run a module-level ``probe(submission, *args, **kwargs)`` in the sandbox (for classes and
        procedures, e.g. stepping a learner's optimizer). The probe travels by value (llmlab is not
        importable in the sandbox): it may use torch, numpy, scipy and module-level helpers of its lab."""
        return self._caller(probe, args, kwargs)

    # --- hidden inputs ------------------------------------------------------------------------------
    def randn(self, *shape: int, dtype=torch.float64) -> torch.Tensor:
        return torch.randn(*shape, generator=self.gen, dtype=dtype)

    def randint(self, low: int, high: int) -> int:
        """An int in [low, high)."""
        return int(self.rng.integers(low, high))

    def choice(self, options: list):
        return options[int(self.rng.integers(len(options)))]

    # --- verdicts -----------------------------------------------------------------------------------
    @staticmethod
    def expect(condition: bool, message: str) -> None:
        if not condition:
            raise CheckFailed(message)

    @staticmethod
    def close(actual, expected, *, atol: float, rtol: float = 0.0, what: str = "value") -> None:
        """Fail unless ``actual`` matches ``expected`` in shape and within ``atol + rtol*|expected|``."""
        a = actual if isinstance(actual, torch.Tensor) else torch.as_tensor(actual, dtype=torch.float64)
        e = expected if isinstance(expected, torch.Tensor) else torch.as_tensor(expected, dtype=torch.float64)
        if tuple(a.shape) != tuple(e.shape):
            raise CheckFailed(f"{what}: shape {tuple(a.shape)}, expected {tuple(e.shape)}")
        a, e = a.detach().to(torch.float64), e.detach().to(torch.float64)
        if not torch.isfinite(a).all() and not torch.equal(torch.isfinite(a), torch.isfinite(e)):
            raise CheckFailed(f"{what}: contains NaN or inf")
        err = (a - e).abs() - rtol * e.abs()
        worst = float(err.max()) if err.numel() else 0.0
        if worst > atol:
            raise CheckFailed(f"{what}: off by up to {float((a - e).abs().max()):.3g} (tolerance {atol:g}"
                              + (f" + {rtol:g}*|expected|" if rtol else "") + ")")


@dataclass
class Lab:
    """One lab's contract. ``reference`` is the library module implementing the ``spec`` names; a spec
    entry written ``"module:name"`` comes from another library module."""

    id: str
    module: str  # the lab module's __name__ (the sandbox imports it for the probes)
    reference: str
    spec: list[str]
    limits: LabLimits = field(default_factory=LabLimits)
    checks: list[Check] = field(default_factory=list)
    bugs: dict[str, dict[str, str]] = field(default_factory=dict)
    preload: tuple[str, ...] = ()  # modules the sandbox imports before capping memory
    # What the learner writes themselves, and the library calls that would do it for them: those fail in
    # the sandbox (OffLimits) and the static scan reports them. ``pkg`` blocks a whole package's import;
    # ``module.attr`` / ``module.Class.attr`` replaces one callable.
    own_work: str = ""
    forbidden: tuple[str, ...] = ()

    def check(self, points: float, name: str | None = None):
        def register(fn):
            self.checks.append(Check(name or fn.__name__, points, fn))
            return fn

        return register

    def bug(self, name: str, **overrides: Callable) -> None:
        """A seeded bug: the reference with some spec names replaced by deliberately wrong versions.
        Overrides must be module-level objects, so the generated submission can import them."""
        unknown = set(overrides) - set(self.names)
        if unknown:
            raise ValueError(f"bug {name!r} overrides names outside the spec: {sorted(unknown)}")
        nested = [k for k, v in overrides.items() if "<" in v.__qualname__]
        if nested:
            raise ValueError(f"bug {name!r}: overrides must be module-level, not nested: {nested}")
        self.bugs[name] = {k: f"{v.__module__}:{v.__qualname__}" for k, v in overrides.items()}

    @property
    def max_score(self) -> float:
        return float(sum(c.points for c in self.checks))

    @property
    def names(self) -> list[str]:
        return [entry.rpartition(":")[2] for entry in self.spec]

    def _origins(self) -> list[tuple[str, str]]:
        """(module, name) of every spec entry."""
        return [(entry.partition(":")[0] if ":" in entry else self.reference, entry.rpartition(":")[2])
                for entry in self.spec]

    def reference_object(self, name: str):
        module = dict((n, m) for m, n in self._origins())[name]
        return getattr(importlib.import_module(module), name)

    def submission_source(self, bug: str | None = None) -> str:
        """Python source of a submission that is the reference, or the reference with a seeded bug. It imports
        llmlab, so it grades only as trusted code (``grade(..., trusted=True)``); see ``standalone_source``."""
        lines = [f'"""{"Seeded bug " + bug if bug else "Reference"} submission for lab {self.id}."""']
        for module in dict.fromkeys(m for m, _ in self._origins()):
            names = [n for m, n in self._origins() if m == module]
            lines.append(f"from {module} import {', '.join(names)}  # noqa: F401")
        for target, qual in (self.bugs[bug] if bug else {}).items():
            mod, _, attr = qual.partition(":")
            lines.append(f"from {mod} import {attr} as {target}  # noqa: F401")
        return "\n".join(lines) + "\n"

    def standalone_source(self) -> str:
        """The reference as one file that imports nothing from llmlab, as a learner's submission must be: the
        reference modules' own source, when they import nothing from llmlab themselves (m01's does)."""
        parts = []
        for module in dict.fromkeys(m for m, _ in self._origins()):
            source = inspect.getsource(importlib.import_module(module))
            imports = [ln for ln in source.splitlines() if ln.lstrip().startswith(("import ", "from "))]
            if any("llmlab" in ln for ln in imports):
                raise ValueError(f"{module} imports llmlab: lab {self.id} has no standalone reference")
            parts.append(source)
        return "\n\n".join(parts)

    def write_submission(self, path: Path, bug: str | None = None) -> Path:
        path.write_text(self.submission_source(bug))
        return path

    def spec_text(self, stub: bool = False) -> str:
        """The contract a learner implements: signatures and docstrings of the spec names. With ``stub``,
        each body raises NotImplementedError (the starter file)."""
        body = "    raise NotImplementedError" if stub else "    ..."
        parts = []
        for name in self.names:
            obj = self.reference_object(name)
            if inspect.isclass(obj):
                bases = ", ".join(f"{b.__module__}.{b.__qualname__}" if b.__module__ != "builtins" else b.__name__
                                  for b in obj.__bases__)
                lines = [f"class {name}({bases}):", _doc(obj, "    ")]
                for meth in ("__init__", *sorted(m for m in vars(obj) if not m.startswith("_")
                                                 and callable(vars(obj)[m]))):
                    fn = getattr(obj, meth)
                    lines += [f"    def {meth}{_signature(fn)}:", _doc(fn, "        "), "    " + body]
                parts.append("\n".join(x for x in lines if x))
            else:
                parts.append("\n".join(x for x in (f"def {name}{_signature(obj)}:", _doc(obj, "    "), body) if x))
        return "\n\n\n".join(parts)

    def starter_source(self) -> str:
        """A skeleton submission: every spec name with its docstring, raising NotImplementedError."""
        return (f'"""Lab {self.id} submission: implement every function below, then run\n'
                f'`llmlab grade {self.id} THIS_FILE`."""\n\nfrom __future__ import annotations\n\n'
                "import math  # noqa: F401\n\nimport torch  # noqa: F401\nfrom torch import Tensor  # noqa: F401\n\n\n"
                + self.spec_text(stub=True) + "\n")


class _Annotation(str):
    def __repr__(self) -> str:  # show postponed annotations as written, without quotes
        return str(self)


def _signature(fn) -> str:
    sig = inspect.signature(fn)
    params = [p.replace(annotation=_Annotation(p.annotation)) if isinstance(p.annotation, str) else p
              for p in sig.parameters.values()]
    ret = sig.return_annotation
    return str(sig.replace(parameters=params,
                           return_annotation=_Annotation(ret) if isinstance(ret, str) else ret))


def _doc(obj, indent: str) -> str:
    doc = inspect.getdoc(obj)
    return textwrap.indent(f'"""{doc}"""', indent) if doc else ""
