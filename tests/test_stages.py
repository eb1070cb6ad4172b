"""llmlab.stages: a long deliverable's finished stages are kept, and a rerun with the same config resumes."""

import json

import numpy as np
import pytest

from llmlab.stages import Stages


def test_a_rerun_takes_finished_stages_and_recomputes_the_rest(tmp_path):
    calls = []

    def sweep():
        calls.append("sweep")
        return [{"recall": np.float32(0.5), "ids": np.arange(3)}], (1, 2)

    def fails():
        raise RuntimeError("the last stage dies, as m16's full RAG once did")

    first = Stages(tmp_path, {"passages": None, "hnsw": ((16, 100),)})
    assert first("index sweep", sweep) == [[{"recall": 0.5, "ids": [0, 1, 2]}], [1, 2]]  # JSON's types
    with pytest.raises(RuntimeError):
        first("RAG", fails)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index_sweep.json"]  # nothing half-written

    again = Stages(tmp_path, {"passages": None, "hnsw": [[16, 100]]})  # the same config, as JSON sees it
    assert again("index sweep", pytest.fail) == [[{"recall": 0.5, "ids": [0, 1, 2]}], [1, 2]]
    assert again.resumed == ["index sweep"] and again.seconds["index sweep"] == first.seconds["index sweep"]
    assert again("RAG", lambda: {"em": 0.0}) == {"em": 0.0} and calls == ["sweep"]

    changed = Stages(tmp_path, {"passages": 10_000, "hnsw": [[16, 100]]})
    assert changed("index sweep", sweep) and calls == ["sweep", "sweep"] and changed.resumed == []
    assert json.loads((tmp_path / "index_sweep.json").read_text())["config"]["passages"] == 10_000
