"""Settings objects (dataclasses) filled from files and command lines, with one rule: a key the dataclass
does not have is an error, so that a typo never silently runs the default."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path


def reject_unknown(cls, d: dict, what: str) -> None:
    """Raise ValueError naming the keys of ``d`` that are not fields of ``cls`` (``what``: "pretraining")."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {what} setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")


def read_file(path, table: str) -> dict:
    """The settings in a TOML, YAML or JSON file: its ``[table]`` table if it has one, else its top level."""
    path = Path(path)
    text = path.read_text()
    if path.suffix == ".toml":
        import tomllib

        d = tomllib.loads(text)
    elif path.suffix in (".yaml", ".yml"):
        import yaml

        d = yaml.safe_load(text)
    elif path.suffix == ".json":
        d = json.loads(text)
    else:
        raise ValueError(f"{path.name}: a settings file is .toml, .yaml or .json")
    if not isinstance(d, dict) or not isinstance(d.get(table, d), dict):
        raise ValueError(f"{path.name}: expected a table of settings")
    return d.get(table, d)
