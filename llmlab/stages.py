"""Stages of a long deliverable that a rerun need not repeat: each finished stage's result is kept as JSON in
a folder, and a rerun into the same folder with the same config takes it from there. A full profile runs for
hours on CPUs; a failure in its last stage should not cost the ones before. Delete the folder to recompute."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def plain(obj: Any) -> Any:
    """JSON's types for ``obj`` (numpy scalars and arrays, tuples), through a JSON round trip."""
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else float(o)))


class Stages:
    """``stages(name, fn)``: ``fn()``'s result (as JSON types), kept under ``folder``; ``seconds[name]`` is how
    long it took when it ran."""

    def __init__(self, folder: Path, config: dict):
        self.folder, self.config = Path(folder), plain(config)
        self.seconds: dict[str, float] = {}
        self.resumed: list[str] = []

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        path = self.folder / f"{name.replace(' ', '_')}.json"
        if path.is_file():
            kept = json.loads(path.read_text())
            if kept.get("config") == self.config:
                self.seconds[name] = kept["seconds"]
                self.resumed.append(name)
                return kept["result"]
        t = time.perf_counter()
        result = plain(fn())
        self.seconds[name] = round(time.perf_counter() - t, 1)
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"config": self.config, "seconds": self.seconds[name], "result": result}))
        os.replace(tmp, path)  # a stage is kept whole or not at all
        return result
