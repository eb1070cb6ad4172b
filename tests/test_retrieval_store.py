"""The retrieval service's store: FAISS over SQLite. Searches against exact search over the live documents,
durability under kill -9 (a real child process killed mid-write), rebuilds beside concurrent searches."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from llmlab.retrieval.index import IndexSpec
from llmlab.retrieval.metrics import recall_at_k
from llmlab.retrieval.store import VectorStore


def unit(n, d=16, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_live(store, vectors_by_id, queries, k, keep=lambda i: True):
    ids = np.array([i for i in vectors_by_id if keep(i)])
    scores = queries @ np.stack([vectors_by_id[i] for i in ids]).T
    return ids[np.argsort(-scores, axis=1, kind="stable")[:, :k]]


@pytest.mark.parametrize("spec", [IndexSpec("flat"), IndexSpec("hnsw", M=16, search_values=(128,)),
                                  IndexSpec("ivf_pq_refine", nlist=16, code_bytes=8, search_values=(16,))],
                         ids=["flat", "hnsw", "ivf_pq_refine"])
def test_search_delete_filter_reopen_rebuild(tmp_path, spec):
    x = unit(2000)
    store = VectorStore(tmp_path, 16, spec)
    ids = store.add([{"title": f"t{i}", "text": f"doc {i}", "metadata": {"group": i % 4, "lang": "en"}}
                     for i in range(2000)], x)
    by_id = dict(zip(ids, x, strict=True))
    q = unit(50, seed=1)
    # IVF-PQ (8 bytes for 16 floats) re-ranked by 8-bit scalar-quantized vectors, every list probed
    need = {"flat": 1.0, "hnsw": 0.97, "ivf_pq_refine": 0.9}[spec.kind]
    assert recall_at_k(store.search(q, 5)[1], exact_live(store, by_id, q, 5), 5) >= need
    gone = store.delete(ids[:300] + [10**9])  # an unknown id is ignored
    assert gone == ids[:300] and store.size == 1700
    live = set(ids[300:])
    found = store.search(q, 5)[1]
    assert not set(found.ravel().tolist()) - live  # no deleted document comes back
    assert recall_at_k(found, exact_live(store, by_id, q, 5, lambda i: i in live), 5) >= need
    filtered = store.search(q, 5, where={"group": 2})[1]
    assert all(store.get([int(i)])[int(i)]["metadata"]["group"] == 2 for i in filtered.ravel())
    assert (store.search(q[:1], 5, where={"group": 7})[1] == -1).all()  # nothing matches: all padding
    store.snapshot()
    more = store.add([{"text": "late"}], unit(1, seed=5))
    store.delete([ids[400]])
    reopened = VectorStore(tmp_path, 16, spec)  # snapshot + the changes after it, replayed from SQLite
    assert reopened.size == 1700 and reopened.get(more)[more[0]]["text"] == "late"
    assert np.array_equal(reopened.search(q, 5)[1], store.search(q, 5)[1])
    reopened.rebuild()
    assert not reopened._tombstones and reopened.size == 1700
    assert ids[400] not in set(reopened.search(q, 20)[1].ravel().tolist())
    with pytest.raises(ValueError, match="16-dimensional"):
        VectorStore(tmp_path, 32, spec)


def test_an_ivf_store_is_exact_until_it_has_enough_documents_to_train(tmp_path):
    """An IVF index cannot exist before k-means has documents to train on: the store opens empty, answers
    exactly (filters included) from SQLite, and the add that brings enough documents builds the index."""
    spec = IndexSpec("ivf_pq", nlist=8, code_bytes=4, search_values=(8,))
    store = VectorStore(tmp_path, 16, spec)
    assert store._index is None and spec.train_min == 256 and store.snapshot() is None
    x = unit(300, seed=2)
    first = store.add([{"text": f"doc {i}", "metadata": {"odd": i % 2}} for i in range(200)], x[:200])
    assert store._index is None  # 200 < 256
    scores, found = store.search(x[:3], 5)
    assert found[:, 0].tolist() == first[:3] and np.allclose(scores[:, 0], 1, atol=1e-5)  # exact: itself first
    odd = store.search(x[:2], 3, where={"odd": 1})[1]
    assert all(store.get([int(i)])[int(i)]["metadata"]["odd"] == 1 for i in odd.ravel())
    assert (store.search(x[:1], 300)[1][0, 200:] == -1).all()  # fewer than k: padded as FAISS pads
    store.delete(first[:1])
    assert first[0] not in store.search(x[:1], 5)[1]
    reopened = VectorStore(tmp_path, 16, spec)  # still untrained after a restart, nothing lost
    assert reopened._index is None and reopened.size == 199
    reopened.add([{"text": f"doc {i}"} for i in range(200, 300)], x[200:])
    assert reopened._index is not None and reopened._index.ntotal == 299 and reopened.snapshot() is not None
    assert VectorStore(tmp_path, 16, spec)._index.ntotal == 299  # from the snapshot


WRITER = textwrap.dedent("""
    import sys, numpy as np
    from llmlab.retrieval.index import IndexSpec
    from llmlab.retrieval.store import VectorStore
    store = VectorStore(sys.argv[1], 16, IndexSpec("hnsw", M=8, search_values=(64,)))
    rng = np.random.default_rng(0)
    for i in range(100000):
        v = rng.standard_normal((3, 16)).astype("float32")
        ids = store.add([{"text": f"doc {i}.{j}"} for j in range(3)], v / np.linalg.norm(v, axis=1, keepdims=True))
        if i % 7 == 3:
            store.snapshot()
        print(*ids, flush=True)  # acknowledged: durable before this line
""")


def test_kill_9_loses_no_acknowledged_document(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    acked: list[int] = []
    deadline = time.monotonic() + 120
    while len(acked) < 600 and time.monotonic() < deadline:
        acked += [int(i) for i in proc.stdout.readline().split()]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    acked += [int(i) for line in proc.stdout.read().splitlines() for i in line.split()]
    assert len(acked) >= 600
    store = VectorStore(tmp_path, 16, IndexSpec("hnsw", M=8, search_values=(64,)))
    docs = store.get(acked)
    assert set(docs) == set(acked)  # every acknowledged document survived
    vectors = store.vectors(acked[-50:])
    top = store.search(vectors, 1)[1][:, 0]
    assert (top == np.array(acked[-50:])).mean() > 0.95  # and is in the index, found by its own vector
    assert len(set(store.search(vectors, 10)[1].ravel().tolist())) > 50  # no duplicated entries crowd results


def test_rebuild_and_adds_beside_concurrent_searches(tmp_path):
    store = VectorStore(tmp_path, 16, IndexSpec("flat"))
    x = unit(3000)
    ids = store.add([{"text": str(i)} for i in range(3000)], x)
    q = unit(20, seed=3)
    errors, searches = [], [0]
    stop = threading.Event()

    def searcher():
        while not stop.is_set():
            try:
                found = store.search(q, 5)[1]
                assert (found >= 0).all()
                searches[0] += 1
            except Exception as e:  # noqa: BLE001
                errors.append(e)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    new = store.add([{"text": "n"}] * 200, unit(200, seed=9))
    store.delete(ids[:100])
    store.rebuild()
    stop.set()
    for t in threads:
        t.join()
    assert not errors and searches[0] > 0
    by_id = dict(zip(ids[100:] + new, np.concatenate([x[100:], unit(200, seed=9)]), strict=True))
    assert np.array_equal(store.search(q, 5)[1], exact_live(store, by_id, q, 5))
    assert store.get([new[0]])[new[0]]["text"] == "n"
