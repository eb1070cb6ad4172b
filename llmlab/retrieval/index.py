"""FAISS indexes over unit vectors (inner product = cosine): exact (Flat), HNSW, IVF-Flat and IVF-PQ, built
from FAISS's factory strings, their search-time knobs, memory per vector, and the sweep of recall@k (against
exact search) vs latency that chooses between them."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from llmlab.retrieval.metrics import pareto, recall_at_k


def faiss():
    import faiss as _faiss

    return _faiss


@dataclass(frozen=True)
class IndexSpec:
    """One index to build: ``kind`` flat | hnsw | ivf_flat | ivf_pq | ivf_pq_refine, its build knobs, and the
    search-time knob (efSearch for HNSW, nprobe for IVF) swept over ``search_values``. ``ivf_pq_refine`` re-ranks
    IVF-PQ's top ``refine_factor`` x k candidates by 8-bit scalar-quantized vectors (FAISS's Refine(SQ8)):
    most of exact search's recall back for 384 more bytes a vector (at 384 dimensions), a quarter of float32's."""
    kind: str
    M: int = 32  # HNSW: graph degree (2M links on layer 0)
    ef_construction: int = 200  # HNSW: candidate list while inserting
    nlist: int = 1024  # IVF: coarse clusters
    code_bytes: int = 48  # IVF-PQ: sub-quantizers of 8 bits each, one byte per sub-vector
    refine_factor: int = 4  # IVF-PQ + refine: candidates re-ranked per result wanted
    search_values: tuple[int, ...] = ()

    @property
    def factory(self) -> str:
        return {"flat": "Flat", "hnsw": f"HNSW{self.M},Flat", "ivf_flat": f"IVF{self.nlist},Flat",
                "ivf_pq": f"IVF{self.nlist},PQ{self.code_bytes}",
                "ivf_pq_refine": f"IVF{self.nlist},PQ{self.code_bytes},Refine(SQ8)"}[self.kind]

    @property
    def train_min(self) -> int:
        """The vectors an index of this kind needs to train on: IVF's k-means needs nlist, and PQ's codebooks
        (8 bits, 256 centroids a sub-vector) 256; the others none."""
        if not self.kind.startswith("ivf"):
            return 0
        return max(self.nlist, 256) if self.kind.startswith("ivf_pq") else self.nlist

    @property
    def knob(self) -> str | None:
        return {"hnsw": "efSearch", "ivf_flat": "nprobe", "ivf_pq": "nprobe", "ivf_pq_refine": "nprobe"}.get(self.kind)

    @property
    def label(self) -> str:
        return {"flat": "Flat (exact)", "hnsw": f"HNSW M={self.M} efC={self.ef_construction}",
                "ivf_flat": f"IVF{self.nlist}-Flat", "ivf_pq": f"IVF{self.nlist}-PQ{self.code_bytes}",
                "ivf_pq_refine": f"IVF{self.nlist}-PQ{self.code_bytes}+SQ8x{self.refine_factor}"}[self.kind]


def empty_index(spec: IndexSpec, dim: int):
    """A new, untrained and empty index of ``spec`` over ``dim``-dimensional vectors, its build knobs set."""
    f = faiss()
    index = f.index_factory(dim, spec.factory, f.METRIC_INNER_PRODUCT)
    if spec.kind == "hnsw":
        index.hnsw.efConstruction = spec.ef_construction
    if spec.kind == "ivf_pq_refine":
        index.k_factor = spec.refine_factor
    if spec.kind.startswith("ivf_pq"):  # the factory turns on polysemous training (codes for Hamming filtering,
        f.downcast_index(f.extract_index_ivf(index)).do_polysemous_training = False  # unused here): 95% of the build
    return index


def build(spec: IndexSpec, vectors: np.ndarray, train: np.ndarray | None = None):
    """The index of ``vectors`` (float32, unit rows); IVF indexes train their k-means on ``train`` (default:
    the vectors themselves)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index = empty_index(spec, vectors.shape[1])
    if not index.is_trained:
        index.train(np.ascontiguousarray(train if train is not None else vectors, dtype=np.float32))
    index.add(vectors)
    return index


def set_knob(index, spec: IndexSpec, value: int) -> None:
    if spec.knob is not None:
        faiss().ParameterSpace().set_index_parameter(index, spec.knob, value)


def bytes_per_vector(index) -> float:
    """The serialized index's size over its vectors: what it costs in memory, graph links and lists included."""
    return len(faiss().serialize_index(index)) / index.ntotal


def exact(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product: (scores, ids), each (n_queries, k)."""
    index = faiss().IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)


def distances_per_query(index, spec: IndexSpec, queries: np.ndarray, k: int) -> float:
    """Vectors (for IVF-PQ: codes) one query is compared with, counted by FAISS's own search statistics: the
    work an index saves, the same on any machine under any load. Exact search compares all n; IVF adds its
    nlist centroids, a refine its re-ranked candidates."""
    f = faiss()
    if spec.kind == "flat":
        return float(index.ntotal)
    stats = f.cvar.hnsw_stats if spec.kind == "hnsw" else f.cvar.indexIVF_stats
    stats.reset()
    index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    refined = k * spec.refine_factor if spec.kind == "ivf_pq_refine" else 0
    return stats.ndis / len(queries) + (f.extract_index_ivf(index).nlist + refined if spec.kind != "hnsw" else 0)


def timed_search(index, queries: np.ndarray, k: int, single: bool) -> tuple[np.ndarray, float]:
    """(ids, seconds per query): one query per call (what a service sees per request) or one batch."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    index.search(queries[:1], k)  # warm-up: first-call allocations are not the index's latency
    if not single:
        t0 = time.perf_counter()
        _, ids = index.search(queries, k)
        return ids, (time.perf_counter() - t0) / len(queries)
    ids = np.empty((len(queries), k), dtype=np.int64)
    t0 = time.perf_counter()
    for i in range(len(queries)):
        ids[i] = index.search(queries[i:i + 1], k)[1][0]
    return ids, (time.perf_counter() - t0) / len(queries)


def sweep(specs: list[IndexSpec], vectors: np.ndarray, queries: np.ndarray, k: int = 5,
          threads: int = 1, progress=None) -> list[dict]:
    """Every spec at every search value: recall@k against exact search, seconds per query (single queries
    and one batch), distances computed per query, bytes per vector and build seconds. FAISS runs on
    ``threads`` OpenMP threads. The rows on the (latency, recall) Pareto front of single queries get
    "pareto": True."""
    f = faiss()
    f.omp_set_num_threads(threads)
    _, truth = exact(vectors, queries, k)
    rows = []
    for spec in specs:
        t0 = time.perf_counter()
        index = build(spec, vectors)
        built = time.perf_counter() - t0
        size = bytes_per_vector(index)
        for value in spec.search_values or (None,):
            if value is not None:
                set_knob(index, spec, value)
            single_ids, single = timed_search(index, queries, k, single=True)
            batch_ids, batch = timed_search(index, queries, k, single=False)
            rows.append({"index": spec.kind, "label": spec.label, "factory": spec.factory, "knob": spec.knob,
                         "value": value, f"recall@{k}": recall_at_k(single_ids, truth, k),
                         "batch_recall": recall_at_k(batch_ids, truth, k), "ms_single": 1e3 * single,
                         "ms_batch": 1e3 * batch, "distances": distances_per_query(index, spec, queries, k),
                         "bytes_per_vector": size, "build_seconds": built})
            if progress is not None:
                progress(rows[-1])
    front = pareto([(r["ms_single"], r[f"recall@{k}"]) for r in rows])
    for i, r in enumerate(rows):
        r["pareto"] = i in front
    return rows
