"""Settings objects (dataclasses) filled from files and command lines, with one rule: a key the dataclass
does not have is an error, so that a typo never silently runs the default."""

from __future__ import annotations

from dataclasses import fields


def reject_unknown(cls, d: dict, what: str) -> None:
    """Raise ValueError naming the keys of ``d`` that are not fields of ``cls`` (``what``: "pretraining")."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {what} setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
