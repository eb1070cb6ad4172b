"""Clients of the retrieval service's API, and sharding over several of them: each shard a service (a pod
in Kubernetes) holding part of the documents; a search fans out to every shard and merges their top k by
score, as FAISS's IndexShards does inside one process. ``llmlab serve retrieval --shard URL ...`` runs the
same fan-out as a service (the in-cluster router)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor


class ServiceError(RuntimeError):
    """A retrieval service answered ``status`` (>= 400), or could not be reached (503)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status} {message}")
        self.status, self.message = status, message


class RetrievalClient:
    """``search(query | vector, k, where) -> hits`` ({"id", "title", "text", "metadata", "score"}, best first)
    against one retrieval service; writes (``add``, ``delete``, ``rebuild``) need the service's API key."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 30.0, http_client=None):
        import httpx

        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = http_client or httpx.Client(timeout=timeout)
        self.headers = headers

    def _call(self, method: str, path: str, body: dict | None = None, missing_ok: bool = False) -> dict | None:
        import httpx

        try:
            r = self.http.request(method, f"{self.base_url}{path}", json=body, headers=self.headers)
        except httpx.HTTPError as e:
            raise ServiceError(503, f"{self.base_url}{path}: {type(e).__name__}: {e}") from None
        if r.status_code == 404 and missing_ok:
            return None
        if r.status_code >= 400:
            try:
                message = r.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = r.text[:300]
            raise ServiceError(r.status_code, f"{path}: {message}")
        return r.json()

    def search(self, query: str | None = None, k: int = 5, vector: list[float] | None = None,
               where: dict | None = None) -> list[dict]:
        body = {"k": k, "filter": where} | ({"vector": list(vector)} if vector is not None else {"query": query})
        return self._call("POST", "/v1/search", body)["data"]

    def embed(self, texts: list[str], model: str = "all-MiniLM-L6-v2") -> list[list[float]]:
        return [d["embedding"] for d in self._call("POST", "/v1/embeddings", {"model": model, "input": texts})["data"]]

    def add(self, documents: list[dict]) -> list[int]:
        return self._call("POST", "/v1/documents", {"documents": documents})["ids"]

    def get(self, doc_id: int) -> dict | None:
        return self._call("GET", f"/v1/documents/{doc_id}", missing_ok=True)

    def delete(self, doc_id: int) -> bool:
        return self._call("DELETE", f"/v1/documents/{doc_id}", missing_ok=True) is not None

    def rebuild(self) -> None:
        self._call("POST", "/v1/index/rebuild")

    def ready(self) -> dict:
        """The service's readiness: {"status", "documents", "index", "rebuilding"}; ServiceError(503) if not."""
        return self._call("GET", "/ready")


def merge_top_k(results: list[list[dict]], k: int) -> list[dict]:
    """The k best hits over shards' own top-k lists, by score (ties: shard order, then rank), each tagged
    with its shard."""
    tagged = [(-h["score"], s, r, {**h, "shard": s}) for s, hits in enumerate(results) for r, h in enumerate(hits)]
    return [h for *_, h in sorted(tagged, key=lambda t: t[:3])[:k]]


class ShardedRetrieval:
    """The API of one service over several shards. A search sends the query's vector (embedded once, by the
    first shard unless given) to every shard in parallel and merges the top k. ``add`` spreads documents over
    the shards round robin. Ids are global: a shard's document ``i`` of ``n`` shards is ``i * n + shard``, so
    ``get`` and ``delete`` go to the one shard that holds it (the shard count is fixed for a set of stores).
    ``concurrency``: searches expected at once (each fans out to every shard)."""

    def __init__(self, shards: list[RetrievalClient], concurrency: int = 4):
        if not shards:
            raise ValueError("ShardedRetrieval needs at least one shard")
        self.shards = shards
        self._pool = ThreadPoolExecutor(max_workers=len(shards) * concurrency, thread_name_prefix="shard")
        self._next = 0
        self._lock = threading.Lock()  # the round robin's position, under concurrent adds

    def global_id(self, shard: int, doc_id: int) -> int:
        return doc_id * len(self.shards) + shard

    def locate(self, global_id: int) -> tuple[int, int]:
        """(shard, the shard's id) of a global id."""
        return global_id % len(self.shards), global_id // len(self.shards)

    def _all(self, fn) -> list:
        return list(self._pool.map(fn, self.shards))

    def search(self, query: str | None = None, k: int = 5, vector: list[float] | None = None,
               where: dict | None = None) -> list[dict]:
        if vector is None:
            vector = self.shards[0].embed([query])[0]
        results = self._all(lambda c: c.search(k=k, vector=vector, where=where))
        return [{**h, "id": self.global_id(h["shard"], h["id"])} for h in merge_top_k(results, k)]

    def add(self, documents: list[dict]) -> list[int]:
        """The documents' global ids, in order."""
        out: list[int] = [0] * len(documents)
        groups: dict[int, list[int]] = {}
        with self._lock:
            first, self._next = self._next, self._next + len(documents)
        for i in range(len(documents)):
            groups.setdefault((first + i) % len(self.shards), []).append(i)
        for s, idx in groups.items():
            for i, doc_id in zip(idx, self.shards[s].add([documents[i] for i in idx]), strict=True):
                out[i] = self.global_id(s, doc_id)
        return out

    def get(self, global_id: int) -> dict | None:
        shard, doc_id = self.locate(global_id)
        doc = self.shards[shard].get(doc_id) if doc_id >= 1 else None
        return doc and {**doc, "id": global_id, "shard": shard}

    def delete(self, global_id: int) -> bool:
        shard, doc_id = self.locate(global_id)
        return doc_id >= 1 and self.shards[shard].delete(doc_id)

    def rebuild(self) -> None:
        self._all(lambda c: c.rebuild())

    def ready(self) -> dict:
        """Every shard's readiness (ServiceError if one is not ready) and the documents over all of them."""
        states = self._all(lambda c: c.ready())
        return {"status": "ready", "documents": sum(s["documents"] for s in states), "shards": len(states),
                "rebuilding": any(s.get("rebuilding") for s in states)}
