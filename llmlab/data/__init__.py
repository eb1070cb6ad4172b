"""Loaders for the shared public data sets and the standard formats they come in.

The data lives outside the repository (never copied in): ``llmlab.data.catalog`` lists every data set
(``llmlab data list``), where files are looked up and how ``llmlab data fetch`` downloads them. Every loader
also takes an explicit path, so a user can point it at their own copy of the public files.
"""

from __future__ import annotations

import os
from pathlib import Path


class DataNotFound(FileNotFoundError):
    pass


def data_dir() -> Path:
    """The first folder that holds data (see ``llmlab.data.catalog.roots``)."""
    from llmlab.data import catalog

    return next((r for r in catalog.roots() if r.is_dir()), catalog.target_dir())


def resolve(relative: str, path: str | os.PathLike | None = None) -> Path:
    """``path`` if given, else ``relative`` in the data folders; an error naming the command that fetches it."""
    from llmlab.data import catalog

    if path is not None:
        p = Path(path)
        if not p.exists():
            raise DataNotFound(f"data file not found: {p}")
        return p
    found = catalog.locate(relative)
    if found is None:
        name = catalog.set_of(relative)
        raise DataNotFound(f"data file {relative} not found in {', '.join(map(str, catalog.roots()))}; "
                           + (f"run `llmlab data fetch {name}`" if name else "set LLMLAB_DATA_DIR to your copy"))
    return found
