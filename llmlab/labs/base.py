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
import math
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
    grades: str = ""  # the item of the syllabus's graded deliverable (or, for groundwork, the topic) it grades

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
        """Fail unless ``actual`` matches ``expected`` in type, dtype, shape and value (within
        ``atol + rtol*|expected|``). A tensor must have the expected tensor's floating dtype (float32 for
        float64 loses the precision a check asks for); complex values, NaN, and inf where a finite value is
        expected all fail, and so does NaN on both sides (two degenerate outputs compared with each other)."""
        e = expected if isinstance(expected, torch.Tensor) else torch.as_tensor(expected, dtype=torch.float64)
        if isinstance(actual, torch.Tensor):
            a = actual
            if a.is_complex():
                raise CheckFailed(f"{what}: complex values ({a.dtype}), expected real numbers")
            if isinstance(expected, torch.Tensor) and e.is_floating_point() and a.dtype != e.dtype:
                raise CheckFailed(f"{what}: dtype {a.dtype}, expected {e.dtype}")
        else:
            try:
                a = torch.as_tensor(actual, dtype=torch.float64)
            except (TypeError, ValueError, RuntimeError):
                raise CheckFailed(f"{what}: a {type(actual).__name__}, expected numbers of shape "
                                  f"{tuple(e.shape)}") from None
        if tuple(a.shape) != tuple(e.shape):
            raise CheckFailed(f"{what}: shape {tuple(a.shape)}, expected {tuple(e.shape)}")
        a, e = a.detach().to(torch.float64), e.detach().to(torch.float64)
        if torch.isnan(a).any() or torch.isnan(e).any():
            raise CheckFailed(f"{what}: contains NaN")
        finite = torch.isfinite(e)
        if not torch.isfinite(a[finite]).all() or not torch.equal(a[~finite], e[~finite]):
            raise CheckFailed(f"{what}: contains inf where a finite value is expected (or the wrong inf)")
        a, e = a[finite], e[finite]
        err = (a - e).abs() - rtol * e.abs()
        worst = float(err.max()) if err.numel() else 0.0
        if worst > atol:
            raise CheckFailed(f"{what}: off by up to {float((a - e).abs().max()):.3g} (tolerance {atol:g}"
                              + (f" + {rtol:g}*|expected|" if rtol else "") + ")")

    # --- types before judging: a value of the wrong kind fails with a clear message, never by coercion ---
    @staticmethod
    def tensor(value, what: str = "value", *, dtype: torch.dtype | None = None, shape: tuple | None = None,
               finite: bool = True) -> torch.Tensor:
        """``value`` as a tensor of exactly ``dtype`` and ``shape`` (when given), finite when floating."""
        if not isinstance(value, torch.Tensor):
            raise CheckFailed(f"{what}: a {type(value).__name__}, expected a tensor")
        if dtype is not None and value.dtype != dtype:
            raise CheckFailed(f"{what}: dtype {value.dtype}, expected {dtype}")
        if value.is_complex():
            raise CheckFailed(f"{what}: complex values ({value.dtype}), expected real numbers")
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise CheckFailed(f"{what}: shape {tuple(value.shape)}, expected {tuple(shape)}")
        if finite and value.is_floating_point() and not torch.isfinite(value).all():
            raise CheckFailed(f"{what}: contains NaN or inf")
        return value

    @staticmethod
    def number(value, what: str = "value", *, integer: bool = False) -> float | int:
        """``value`` as a finite Python number: an int (``integer``) or any real number; bools, strings and
        tensors with more than one element are refused, not converted."""
        if isinstance(value, torch.Tensor) and value.numel() == 1 and value.dim() == 0 and not value.is_complex() \
                and value.dtype != torch.bool:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
            raise CheckFailed(f"{what}: a {type(value).__name__}, expected {'an int' if integer else 'a number'}")
        if not math.isfinite(value):
            raise CheckFailed(f"{what}: {value} is not finite")
        return value

    @staticmethod
    def boolean(value, what: str = "value") -> bool:
        if isinstance(value, torch.Tensor) and value.dim() == 0 and value.dtype == torch.bool:
            value = bool(value)
        if not isinstance(value, bool):
            raise CheckFailed(f"{what}: a {type(value).__name__}, expected a bool")
        return value

    @staticmethod
    def nondegenerate(value, what: str = "value") -> torch.Tensor:
        """Fail unless ``value`` is a finite real tensor that is not constant (for checks that compare a
        submission with itself, which a constant or all-NaN output would pass)."""
        if not isinstance(value, torch.Tensor) or value.is_complex() or not value.is_floating_point():
            raise CheckFailed(f"{what}: expected a real floating-point tensor, got "
                              f"{getattr(value, 'dtype', type(value).__name__)}")
        if not torch.isfinite(value).all():
            raise CheckFailed(f"{what}: contains NaN or inf")
        if value.numel() > 1 and bool((value == value.flatten()[0]).all()):
            raise CheckFailed(f"{what}: every entry is {float(value.flatten()[0]):g} (a degenerate output)")
        return value


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
    cheat_classes: dict[str, dict[str, str]] = field(default_factory=dict)  # cheat kind -> class overrides
    preload: tuple[str, ...] = ()  # modules the sandbox imports before capping memory
    # What the learner writes themselves, and the library calls that would do it for them: those fail in
    # the sandbox (OffLimits) and the static scan reports them. ``pkg`` blocks a whole package's import;
    # ``module.attr`` / ``module.Class.attr`` replaces one callable.
    own_work: str = ""
    forbidden: tuple[str, ...] = ()
    # The deliverable starts Ray work of its own (Ray Train workers, Ray Data tasks): as a Ray job its driver
    # reserves no CPU, or two such drivers would hold every CPU their own work waits for.
    ray_workload: bool = False

    def check(self, points: float, name: str | None = None, *, grades: str):
        """Register a check worth ``points``; ``grades`` names the part of the syllabus's graded deliverable
        (``llmlab.labs.SYLLABUS``), or for groundwork the topic, that it grades."""
        def register(fn):
            self.checks.append(Check(name or fn.__name__, points, fn, grades))
            return fn

        return register

    def bug(self, name: str, **overrides: Callable) -> None:
        """A seeded bug: the reference with some spec names replaced by deliberately wrong versions.
        Overrides must be module-level objects, so the generated submission can import them."""
        self.bugs[name] = self._overrides(f"bug {name!r}", overrides)

    def cheat(self, kind: str, **classes: type) -> None:
        """How a cheat of ``kind`` (see ``cheat_source``) looks for spec classes, whose values the generic
        cheat cannot reach (e.g. an optimizer whose step does nothing, for ``constant``)."""
        if kind not in CHEATS[1:]:
            raise ValueError(f"cheat kind must be one of {CHEATS[1:]}")
        self.cheat_classes[kind] = self._overrides(f"cheat {kind!r}", classes)

    def _overrides(self, what: str, overrides: dict) -> dict[str, str]:
        unknown = set(overrides) - set(self.names)
        if unknown:
            raise ValueError(f"{what} overrides names outside the spec: {sorted(unknown)}")
        nested = [k for k, v in overrides.items() if "<" in v.__qualname__]
        if nested:
            raise ValueError(f"{what}: overrides must be module-level, not nested: {nested}")
        return {k: f"{v.__module__}:{v.__qualname__}" for k, v in overrides.items()}

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

    def cheat_source(self, kind: str) -> str:
        """A cheating submission the checks must give nothing for: ``reexport`` (llmlab's reference
        imported, as an untrusted submission does it), or the reference's functions with every value they
        return replaced: ``constant`` (zeros), ``nan``, ``dtype`` (float64 <-> float32, ints to float, bools to
        ints). Classes are left as they are unless the lab says how they cheat (``Lab.cheat``)."""
        if kind == "reexport":
            return self.submission_source()
        if kind not in CHEATS:
            raise ValueError(f"unknown cheat {kind!r}; one of {CHEATS}")
        lines = [f'"""Cheating submission ({kind}) for lab {self.id}."""', "import torch as _torch", "",
                 inspect.getsource(_poison), ""]
        classes = self.cheat_classes.get(kind, {})
        for module, name in self._origins():
            lines.append(f"from {module} import {name} as _ref_{name}  # noqa: F401")
            obj = self.reference_object(name)
            if name in classes:
                mod, _, attr = classes[name].partition(":")
                lines.append(f"from {mod} import {attr} as {name}  # noqa: F401")
            elif inspect.isclass(obj):
                lines.append(f"{name} = _ref_{name}")
            else:
                lines.append(f"def {name}(*args, **kwargs):\n    return _poison(_ref_{name}(*args, **kwargs), "
                             f"{kind!r})\n")
        return "\n".join(lines) + "\n"

    def reference_source(self) -> str:
        """The source of the library modules that implement this lab's spec (for the integrity report)."""
        return "\n\n".join(inspect.getsource(importlib.import_module(m))
                             for m in dict.fromkeys(m for m, _ in self._origins()))

    def standalone_source(self) -> str:
        """The reference as one file that imports nothing from llmlab, as a learner's submission must be: the
        reference modules' own source, when they import nothing from llmlab themselves (m01's does)."""
        source = self.reference_source()
        imports = [ln for ln in source.splitlines() if ln.lstrip().startswith(("import ", "from "))]
        if any("llmlab" in ln for ln in imports):
            raise ValueError(f"lab {self.id}'s reference imports llmlab: it has no standalone reference")
        return source

    def write_submission(self, path: Path, bug: str | None = None) -> Path:
        path.write_text(self.submission_source(bug))
        return path

    def spec_text(self, stub: bool = False) -> str:
        """The contract a learner implements: signatures and docstrings of the spec names. With ``stub``,
        each body raises NotImplementedError (the starter file). Self-contained: a base class from llmlab
        that is not itself in the spec (m02's operator mixin) is given in full, as scaffolding."""
        body = "    raise NotImplementedError" if stub else "    ..."
        given, parts = {}, []
        for name in self.names:
            obj = self.reference_object(name)
            if inspect.isclass(obj):
                bases = []
                for b in obj.__bases__:
                    if b.__module__ == "builtins":
                        bases.append(b.__name__)
                    elif b.__module__.split(".")[0] != "llmlab":
                        bases.append(_public_name(b))
                    else:  # a spec class (AdamW(Adam)) or scaffolding given in full
                        bases.append(b.__name__)
                        if b.__name__ not in self.names:
                            given[b.__name__] = inspect.getsource(b)
                lines = [f"class {name}({', '.join(bases)}):", _doc(obj, "    ")]
                for meth in ("__init__", *sorted(m for m in vars(obj) if not m.startswith("_")
                                                 and callable(vars(obj)[m]))):
                    fn = getattr(obj, meth)
                    lines += [f"    def {meth}{_signature(fn)}:", _doc(fn, "        "), "    " + body]
                parts.append("\n".join(x for x in lines if x))
            else:
                parts.append("\n".join(x for x in (f"def {name}{_signature(obj)}:", _doc(obj, "    "), body) if x))
        scaffolding = [f"# Given (not graded): {n}\n{src.rstrip()}" for n, src in given.items()]
        return "\n\n\n".join(scaffolding + parts)

    def rules_text(self) -> str:
        """What the learner writes themselves and which library calls are off limits (enforced)."""
        calls = ", ".join(f.replace(":", ".") + ("" if ":" in f else " (the package)") for f in self.forbidden)
        return (f"You write: {self.own_work or 'every function of the spec'}.\n"
                f"Off limits (they fail inside the grader's sandbox, and the scan reports them): {calls or 'none'}.\n"
                "llmlab itself is not importable by submissions.")

    def starter_source(self) -> str:
        """A skeleton submission: every spec name with its docstring, raising NotImplementedError."""
        rules = textwrap.indent(textwrap.fill(self.rules_text().replace("\n", " "), 100), "")
        return (f'"""Lab {self.id} submission: implement every function below, then run\n'
                f'`llmlab grade {self.id} THIS_FILE`.\n\n{rules}\n"""\n\nfrom __future__ import annotations\n\n'
                "import math  # noqa: F401\n\nimport numpy as np  # noqa: F401\nimport torch  # noqa: F401\n"
                "from torch import Tensor  # noqa: F401\n\n\n" + self.spec_text(stub=True) + "\n")


CHEATS = ("reexport", "constant", "nan", "dtype")


def _poison(value, kind):
    """A cheat's value: same structure, worthless content (see Lab.cheat_source)."""
    import numpy as _np
    import torch as _torch

    if isinstance(value, _np.ndarray) and value.dtype != object:
        value = _torch.from_numpy(value)
    if isinstance(value, _torch.Tensor):
        if kind == "constant":
            return _torch.zeros_like(value)
        if kind == "nan":
            return _torch.full_like(value, float("nan")) if value.is_floating_point() else _torch.zeros_like(value)
        if value.dtype == _torch.bool:
            return value.to(_torch.int64)
        if value.is_floating_point():
            return value.to(_torch.float32 if value.dtype == _torch.float64 else _torch.float64)
        return value.to(_torch.float64)
    if isinstance(value, bool):
        return int(value) if kind == "dtype" else False
    if isinstance(value, int | float):
        return {"constant": 0, "nan": float("nan"), "dtype": float(value) if isinstance(value, int) else
                str(value)}[kind]
    if isinstance(value, str | bytes):
        return value[:0] if kind != "dtype" else list(value)
    if isinstance(value, list | tuple):
        return type(value)(_poison(v, kind) for v in value)
    if isinstance(value, dict):
        return {k: _poison(v, kind) for k, v in value.items()}
    return value


def _public_name(obj) -> str:
    """The shortest import path that reaches ``obj`` (torch.optim.Optimizer, not torch.optim.optimizer.Optimizer)."""
    parts = obj.__module__.split(".")
    for i in range(1, len(parts) + 1):
        try:
            if getattr(importlib.import_module(".".join(parts[:i])), obj.__qualname__, None) is obj:
                return f"{'.'.join(parts[:i])}.{obj.__qualname__}"
        except ImportError:
            continue
    return f"{obj.__module__}.{obj.__qualname__}"


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
    raw = "r" if doc and "\\" in doc else ""  # a docstring quoting a regex (m17's spec) is written raw
    return textwrap.indent(f'{raw}"""{doc}"""', indent) if doc else ""
