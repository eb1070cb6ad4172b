"""Clients of the retrieval service's API, and sharding over several of them: each shard a service (a pod
in Kubernetes) holding part of the documents; a search fans out to every shard and merges their top k by
score, as FAISS's IndexShards does inside one process."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor


class RetrievalClient:
    """``search(query | vector, k, where) -> hits`` ({"id", "title", "text", "metadata", "score"}, best first)
    against one retrieval service; ``add`` needs the service's API key."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 30.0, http_client=None):
        import httpx

        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = http_client or httpx.Client(timeout=timeout)
        self.headers = headers

    def _post(self, path: str, body: dict) -> dict:
        r = self.http.post(f"{self.base_url}{path}", json=body, headers=self.headers)
        if r.status_code >= 400:
            raise RuntimeError(f"{path}: {r.status_code} {r.text[:300]}")
        return r.json()

    def search(self, query: str | None = None, k: int = 5, vector: list[float] | None = None,
               where: dict | None = None) -> list[dict]:
        body = {"k": k, "filter": where} | ({"vector": list(vector)} if vector is not None else {"query": query})
        return self._post("/v1/search", body)["data"]

    def embed(self, texts: list[str], model: str = "all-MiniLM-L6-v2") -> list[list[float]]:
        return [d["embedding"] for d in self._post("/v1/embeddings", {"model": model, "input": texts})["data"]]

    def add(self, documents: list[dict]) -> list[int]:
        return self._post("/v1/documents", {"documents": documents})["ids"]


def merge_top_k(results: list[list[dict]], k: int) -> list[dict]:
    """The k best hits over shards' own top-k lists, by score (ties: shard order, then rank), each tagged
    with its shard; document ids are per shard, so a hit is known by (shard, id)."""
    tagged = [(-h["score"], s, r, {**h, "shard": s}) for s, hits in enumerate(results) for r, h in enumerate(hits)]
    return [h for *_, h in sorted(tagged, key=lambda t: t[:3])[:k]]


class ShardedRetrieval:
    """The same ``search`` over several shards: the query embedded once (by the first shard), its vector sent
    to every shard in parallel, the top k merged. ``add`` spreads documents over the shards round robin."""

    def __init__(self, shards: list[RetrievalClient]):
        self.shards = shards
        self._pool = ThreadPoolExecutor(max_workers=len(shards))
        self._next = 0

    def search(self, query: str | None = None, k: int = 5, vector: list[float] | None = None,
               where: dict | None = None) -> list[dict]:
        if vector is None:
            vector = self.shards[0].embed([query])[0]
        results = list(self._pool.map(lambda c: c.search(k=k, vector=vector, where=where), self.shards))
        return merge_top_k(results, k)

    def add(self, documents: list[dict]) -> list[tuple[int, int]]:
        """(shard, id) of each document."""
        out: list[tuple[int, int] | None] = [None] * len(documents)
        groups: dict[int, list[int]] = {}
        for i in range(len(documents)):
            groups.setdefault((self._next + i) % len(self.shards), []).append(i)
        self._next += len(documents)
        for s, idx in groups.items():
            for i, doc_id in zip(idx, self.shards[s].add([documents[i] for i in idx]), strict=True):
                out[i] = (s, doc_id)
        return out
