"""Loaders for the shared public data sets and the standard formats they come in.

The data lives outside the repository (never copied in). It is found, in order, at ``$LLMLAB_DATA_DIR``,
then ``shared/data`` beside the repository checkout, then ``../shared/data`` from the working directory.
Every loader also takes an explicit path, so a user can point it at their own copy of the public files.
"""

from __future__ import annotations

import os
from pathlib import Path


class DataNotFound(FileNotFoundError):
    pass


def data_dir() -> Path:
    candidates = []
    if os.environ.get("LLMLAB_DATA_DIR"):
        candidates.append(Path(os.environ["LLMLAB_DATA_DIR"]))
    repo = Path(__file__).resolve().parents[2]
    candidates += [repo.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for c in candidates:
        if c.is_dir():
            return c
    raise DataNotFound("the shared data folder was not found; set LLMLAB_DATA_DIR to it (tried: "
                       + ", ".join(str(c) for c in candidates) + ")")


def resolve(relative: str, path: str | os.PathLike | None = None) -> Path:
    """``path`` if given, else ``relative`` under the shared data folder; a clear error when missing."""
    p = Path(path) if path is not None else data_dir() / relative
    if not p.exists():
        raise DataNotFound(f"data file not found: {p}")
    return p
