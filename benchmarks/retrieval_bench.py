"""Lab m16's retrieval at scale. (1) Embedding throughput of llmlab's token-budget batches (bf16 autocast on an
AMX CPU, and in float32) against what a user writes first: a float32 SentenceTransformer.encode call per 32
passages in file order, and one encode call over all of them (sentence-transformers sorts by length itself).
(2) HNSW against exact search over the whole Wikipedia corpus (~105k passages, the embeddings from the on-disk
cache; the first run embeds them: 23 min on 2 CPU cores in float32): the smallest efSearch reaching recall@5
>= 0.98 of exact, and its per-query latency as a fraction of exact search's, one thread, single queries.
(3) The retrieval service's overhead: p95 latency of ``POST /v1/search`` with a vector over HTTP (a real
``llmlab serve retrieval`` process on the same store, a keep-alive client) minus p95 of the store's in-process
search, one client, the same queries; and the router's own cost: the same documents in two shard services
behind ``llmlab serve retrieval --shard ...``, p95 through the router minus p95 of the one service.

    python benchmarks/retrieval_bench.py        (LLMLAB_BENCH_PASSAGES=N for a smaller corpus)
"""

from __future__ import annotations

import os
import time

import numpy as np

from llmlab import serving
from llmlab.retrieval import corpus, index
from llmlab.retrieval.embed import Embedder, embed_cached


def _embedding(embedder: Embedder, texts: list[str]) -> dict:
    """Passages per second: llmlab's batches at its default precision (bf16 autocast on an AMX CPU) and in
    float32, against float32 encode calls as a user writes them."""
    model = embedder.model
    fp32 = Embedder(bf16=False) if embedder.bf16 else embedder
    runs, vectors = {}, {}

    def timed(name, fn):
        fn(texts[:64])  # warm-up
        t0 = time.perf_counter()
        vectors[name] = fn(texts)
        runs[name] = time.perf_counter() - t0

    timed("llmlab", embedder.encode)
    timed("llmlab_fp32", fp32.encode)
    timed("encode_per_32", lambda ts: np.concatenate([model.encode(ts[i:i + 32], batch_size=32,
                                                                   normalize_embeddings=True)
                                                      for i in range(0, len(ts), 32)]))
    timed("encode_once", lambda ts: model.encode(ts, batch_size=32, normalize_embeddings=True))
    return {"texts": len(texts), "bf16": embedder.bf16, **{f"{k}_per_s": len(texts) / v for k, v in runs.items()},
            "speedup_vs_loop": runs["encode_per_32"] / runs["llmlab"],
            "speedup_vs_encode_once": runs["encode_once"] / runs["llmlab"],
            "batching_speedup_fp32": runs["encode_per_32"] / runs["llmlab_fp32"],
            "max_abs_diff_fp32": float(np.abs(vectors["llmlab_fp32"] - vectors["encode_per_32"]).max()),
            "min_cosine_to_fp32": float((vectors["llmlab"] * vectors["encode_per_32"]).sum(1).min())}


def _hnsw_vs_exact(vectors: np.ndarray, queries: np.ndarray) -> dict:
    spec = index.IndexSpec("hnsw", M=32, ef_construction=200, search_values=(16, 32, 48, 64, 96, 128, 192, 256))
    rows = index.sweep([index.IndexSpec("flat"), spec], vectors, queries, k=5, threads=1)
    exact = rows[0]
    good = [r for r in rows[1:] if r["recall@5"] >= 0.98]
    best = min(good, key=lambda r: r["ms_single"]) if good else max(rows[1:], key=lambda r: r["recall@5"])
    return {"passages": len(vectors), "queries": len(queries), "exact_ms": exact["ms_single"],
            "hnsw": {k: best[k] for k in ("label", "value", "recall@5", "ms_single", "bytes_per_vector",
                                          "build_seconds")},
            "latency_fraction": best["ms_single"] / exact["ms_single"], "sweep": rows}


def _service_overhead(vectors: np.ndarray, texts: list[str], queries: np.ndarray, n: int = 10_000) -> dict:
    """p95 of ``POST /v1/search`` (a vector, k = 5) against a real service process on the same store as the
    in-process search, one client, one request at a time, after 20 warm-up queries. The client is a
    keep-alive ``http.client`` connection (the service's cost, not a client library's); the same requests
    through httpx, and the service's floor (``GET /version``), are reported beside it."""
    import http.client
    import json
    import tempfile
    from pathlib import Path
    from urllib.parse import urlparse

    import httpx

    from llmlab.retrieval.store import VectorStore

    spec = index.IndexSpec("hnsw", M=32, ef_construction=200)

    def stored(rows: range) -> tuple[Path, VectorStore]:
        folder = Path(tempfile.mkdtemp(prefix="llmlab-bench-store-"))
        store = VectorStore(folder, vectors.shape[1], spec, 64)
        store.add([{"text": texts[i]} for i in rows], vectors[rows.start:rows.stop:rows.step])
        store.snapshot()
        return folder, store

    folder, store = stored(range(n))
    shards = [stored(range(s, n, 2))[0] for s in (0, 1)]  # as the router's round robin spreads them
    bodies = [json.dumps({"vector": q.tolist(), "k": 5}) for q in queries]

    def p95(fn, items) -> float:
        times = []
        for x in items:
            t0 = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t0)
        return float(np.percentile(times[20:], 95)) * 1e3

    local = p95(lambda q: store.search(q[None], 5), queries)
    local_texts = p95(lambda q: store.get([int(i) for i in store.search(q[None], 5)[1][0] if i >= 0]), queries)

    def serve(*args: str):
        return serving.serve("retrieval", *args, "--ef-search", "64", ready="/ready", timeout=600,
                             env={"OMP_NUM_THREADS": "1"})

    def call(conn, method: str, path: str, body: str | None = None) -> None:
        conn.request(method, path, body=body, headers={"content-type": "application/json"})
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError(f"{method} {path}: {r.status}")

    def connect(base: str):
        url = urlparse(base)
        return http.client.HTTPConnection(url.hostname, url.port, timeout=30)

    with serve("--data", str(folder)) as base, httpx.Client(timeout=30) as hx:
        conn = connect(base)
        floor = p95(lambda _: call(conn, "GET", "/version"), range(len(bodies)))
        remote = p95(lambda b: call(conn, "POST", "/v1/search", b), bodies)
        remote_httpx = p95(lambda b: hx.post(f"{base}/v1/search", content=b, headers={
            "content-type": "application/json"}).raise_for_status(), bodies)
        conn.close()
    with serve("--data", str(shards[0])) as a, serve("--data", str(shards[1])) as b, \
            serve("--shard", a, "--shard", b) as router:
        conn = connect(router)
        routed = p95(lambda body: call(conn, "POST", "/v1/search", body), bodies)
        conn.close()
    return {"documents": n, "queries": len(queries), "in_process_p95_ms": local,
            "in_process_with_texts_p95_ms": local_texts, "http_p95_ms": remote, "http_floor_p95_ms": floor,
            "httpx_p95_ms": remote_httpx, "overhead_p95_ms": remote - local, "router_2_shards_p95_ms": routed,
            "router_overhead_p95_ms": routed - remote}


def main() -> dict:
    embedder = Embedder()
    limit = int(os.environ["LLMLAB_BENCH_PASSAGES"]) if os.environ.get("LLMLAB_BENCH_PASSAGES") else None
    gold, questions = corpus.questions()
    passages = corpus.wikipedia_passages() + gold
    passages = passages[:limit] if limit else passages
    texts = [corpus.text(p) for p in passages]
    out = {"name": "retrieval", "embedding": _embedding(embedder, texts[:2000])}
    vectors = embed_cached(embedder, texts)
    queries = embedder.encode([q["question"] for q in questions[::7][:2000]])
    out["ann"] = _hnsw_vs_exact(vectors, queries)
    out["service"] = _service_overhead(vectors, texts, queries[:500])
    return out


def report(res: dict) -> None:
    e, a = res["embedding"], res["ann"]
    print(f"all-MiniLM-L6-v2 on {e['texts']} passages: llmlab {e['llmlab_per_s']:.1f}/s "
          f"({'bf16 autocast' if e['bf16'] else 'float32'}; float32 {e['llmlab_fp32_per_s']:.1f}/s), encode per 32 "
          f"{e['encode_per_32_per_s']:.1f}/s ({e['speedup_vs_loop']:.2f}x; batching alone "
          f"{e['batching_speedup_fp32']:.2f}x), one encode call {e['encode_once_per_s']:.1f}/s "
          f"({e['speedup_vs_encode_once']:.2f}x); float32 max |diff| {e['max_abs_diff_fp32']:.1e}, "
          f"min cosine to float32 {e['min_cosine_to_fp32']:.6f}")
    h = a["hnsw"]
    print(f"{a['passages']:,} passages, {a['queries']} questions, 1 thread: exact {a['exact_ms']:.3f} ms/query; "
          f"{h['label']} efSearch {h['value']}: recall@5 {h['recall@5']:.3f} at {h['ms_single']:.3f} ms "
          f"({a['latency_fraction']:.3f} of exact), {h['bytes_per_vector']:.0f} B/vector, built in "
          f"{h['build_seconds']:.0f} s")
    sv = res["service"]
    print(f"retrieval service, {sv['documents']:,} documents, HNSW: p95 {sv['http_p95_ms']:.2f} ms over HTTP vs "
          f"{sv['in_process_p95_ms']:.2f} ms in process: overhead {sv['overhead_p95_ms']:.2f} ms (in process with "
          f"the texts {sv['in_process_with_texts_p95_ms']:.2f} ms; GET /version {sv['http_floor_p95_ms']:.2f} ms; "
          f"through httpx {sv['httpx_p95_ms']:.2f} ms)")
    print(f"through a router over two shards of {sv['documents'] // 2:,}: p95 {sv['router_2_shards_p95_ms']:.2f} ms, "
          f"{sv['router_overhead_p95_ms']:+.2f} ms against the one service")


if __name__ == "__main__":
    report(main())
