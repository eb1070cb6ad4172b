"""The retrieval service: OpenAI-compatible embeddings and vector search over a durable FAISS store.

Thin: parsing, limits, the OpenAI error envelope and metrics here; the store (SQLite + FAISS, snapshots,
tombstones, rebuilds) in ``llmlab.retrieval.store``, embeddings in ``llmlab.retrieval.embed``, the fan-out
over shards in ``llmlab.retrieval.client``.
Run: ``llmlab serve retrieval --data DIR`` (a store), or ``--shard URL --shard URL ...`` (a router: the same
API over several stores; searches fan out to every shard and merge, writes go round robin, ids are global).
"""

# no "from __future__ import annotations": FastAPI resolves dependency annotations at runtime

import asyncio
import base64
import re
import threading
import time
from contextlib import asynccontextmanager
from typing import Annotated, Literal

import numpy as np
from fastapi import Depends, FastAPI, Header, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, Field, ValidationError, field_validator

from llmlab import __version__
from llmlab.platform.asgi import APIError, BodyLimit, Observe, install_openai_errors, openai_envelope
from llmlab.platform.logs import RequestLog
from llmlab.platform.metrics import RetrievalMetrics
from llmlab.retrieval.client import RetrievalClient, ServiceError, ShardedRetrieval
from llmlab.retrieval.index import IndexSpec
from llmlab.retrieval.metrics import recall_at_k
from llmlab.retrieval.store import VectorStore
from services.retrieval.settings import RetrievalSettings

UNCOUNTED = ("/metrics", "/health", "/ready")
Scalar = str | int | float | bool
INT64 = 2**63 - 1  # SQLite's integers
KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")
DocId = Annotated[int, Path(ge=1, le=INT64)]


class EmbeddingRequest(BaseModel):
    input: str | list[str]
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None


class SearchRequest(BaseModel):
    query: str | None = None
    vector: list[float] | None = None
    k: int = Field(5, ge=1)
    filter: dict[str, Scalar] | None = None  # metadata fields equal to these values

    @field_validator("filter")
    @classmethod
    def _fits_sqlite(cls, value):
        if value and any(isinstance(v, int) and abs(v) > INT64 for v in value.values()):
            raise ValueError("integers in a filter must fit in 64 bits")
        if value and not all(KEY.fullmatch(k) for k in value):
            raise ValueError("filter keys are metadata field names: letters, digits, _ and -, at most 64")
        return value


class Document(BaseModel):
    text: str = Field(min_length=1)
    title: str = ""
    metadata: dict[str, Scalar] = Field(default_factory=dict)


class AddRequest(BaseModel):
    documents: list[Document] = Field(min_length=1)


def spec_of(settings: RetrievalSettings) -> tuple[IndexSpec, int | None]:
    spec = IndexSpec(settings.index, M=settings.hnsw_m, ef_construction=settings.ef_construction,
                     nlist=settings.nlist, code_bytes=settings.pq_bytes, refine_factor=settings.refine_factor)
    return spec, {"hnsw": settings.ef_search, "flat": None}.get(settings.index, settings.nprobe)


def create_app(settings: RetrievalSettings, embedder=None) -> FastAPI:
    import faiss
    import torch

    from llmlab.retrieval.embed import Embedder

    faiss.omp_set_num_threads(settings.faiss_threads)
    torch.set_num_threads(settings.torch_threads)
    embedder = embedder or Embedder(settings.model, bf16=settings.bf16)
    key = settings.api_key.get_secret_value() if settings.api_key else None
    store = router = None
    if settings.shards:
        router = ShardedRetrieval([RetrievalClient(str(url), api_key=key, timeout=settings.shard_timeout_s)
                                   for url in settings.shards], concurrency=settings.max_inflight)
    else:
        store = VectorStore(settings.data_dir, embedder.dim, *spec_of(settings))
    registry = CollectorRegistry()
    m = RetrievalMetrics(registry, settings.index, store=store is not None)
    if store is not None:
        m.documents.set(store.size)
    state = {"inflight": 0, "changes": 0, "rebuilding": False, "ready": False}
    lock = threading.Lock()

    def run_canary() -> float | None:
        ids = store.sample_ids(settings.canary_queries) if store is not None and settings.canary_queries else []
        if not ids:
            return None
        queries = store.vectors(ids)
        k = min(10, store.size)
        if k == 0:
            return None
        value = recall_at_k(store.search(queries, k)[1], store.exact(queries, k)[1], k)
        m.recall.set(value)
        return value

    async def canary_loop():
        while True:
            await run_in_threadpool(run_canary)
            await asyncio.sleep(settings.canary_every_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.create_task(canary_loop()) if store is not None else None
        state["ready"] = True
        yield
        if store is not None:
            task.cancel()
            store.snapshot()

    app = FastAPI(title="llmlab retrieval", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible embeddings and vector search over a durable FAISS index.")
    app.state.store = store
    app.state.canary = run_canary
    limit = settings.max_batch * (4 * settings.max_text_chars + 1024) + 64 * 1024
    app.add_middleware(BodyLimit, limit=limit, error_body=lambda status, message: openai_envelope(status, message))
    app.add_middleware(Observe, observe=lambda method, route, status, seconds: route in UNCOUNTED or
                       m.http_duration.labels(method, route, str(status)).observe(seconds))
    app.add_middleware(RequestLog, service="retrieval")  # outermost: request ids and JSON access lines
    install_openai_errors(app)

    @asynccontextmanager
    async def admitted():
        with lock:
            if state["inflight"] >= settings.max_inflight:
                m.rejected.inc()
                raise APIError(429, f"over {settings.max_inflight} requests in flight; retry shortly",
                               "rate_limit_exceeded", headers={"Retry-After": "1"})
            state["inflight"] += 1
        try:
            yield
        finally:
            with lock:
                state["inflight"] -= 1

    async def admit():
        async with admitted():
            yield

    def writer(authorization: Annotated[str | None, Header()] = None) -> None:
        if key and authorization != f"Bearer {key}":
            raise APIError(401, "invalid or missing API key", "authentication_error")

    def texts_of(value: str | list[str], param: str) -> list[str]:
        texts = [value] if isinstance(value, str) else value
        if not texts or len(texts) > settings.max_batch:
            raise APIError(400, f"{param}: between 1 and {settings.max_batch} texts", param=param)
        for t in texts:
            if not t or len(t) > settings.max_text_chars:
                raise APIError(400, f"{param}: every text must have 1 to {settings.max_text_chars} characters",
                               param=param)
        return texts

    async def embed(texts: list[str]) -> np.ndarray:
        return await run_in_threadpool(embedder.encode, texts)

    async def on_shards(fn, *args):
        """A router's call to its shards, off the event loop. A shard's 400, 409 or 429 is the client's answer;
        anything else a shard answers is a 502, and an unreachable shard a 503."""
        try:
            return await run_in_threadpool(fn, *args)
        except ServiceError as e:
            if e.status in (400, 409, 429):
                raise APIError(e.status, f"a shard answered: {e.message}", "rate_limit_exceeded" if e.status == 429
                               else "invalid_request_error", headers={"Retry-After": "1"} if e.status == 429
                               else None) from None
            raise APIError(503 if e.status == 503 else 502, f"a shard failed: {e}", "server_error") from None

    @app.post("/v1/embeddings", dependencies=[Depends(admit)])
    async def embeddings(body: EmbeddingRequest):
        if body.model != settings.served_model_name:
            raise APIError(404, f"the model {body.model!r} does not exist; this server serves "
                           f"{settings.served_model_name!r}", param="model")
        texts = texts_of(body.input, "input")
        vectors = await embed(texts)
        tokens = sum(embedder.token_counts(texts))
        data = [{"object": "embedding", "index": i,
                 "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode() if body.encoding_format == "base64"
                 else v.tolist()} for i, v in enumerate(vectors)]
        return {"object": "list", "data": data, "model": settings.served_model_name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    search_schema = {"requestBody": {"required": True, "content": {"application/json": {
        "schema": SearchRequest.model_json_schema(ref_template="#/components/schemas/{model}")}}}}

    @app.post("/v1/search", openapi_extra=search_schema)
    async def search(request: Request):
        # the hot path parses its body with pydantic-core's JSON parser in one pass (FastAPI's body dependency
        # decodes with json.loads, then validates): the same model, the same 400 for a bad field
        try:
            body = SearchRequest.model_validate_json(await request.body())
        except ValidationError as e:
            raise RequestValidationError([{**err, "loc": ("body", *err["loc"])} for err in e.errors()]) from None
        if (body.query is None) == (body.vector is None):
            raise APIError(400, "give exactly one of query (text) and vector", param="query")
        if body.k > settings.max_k:
            raise APIError(400, f"k: at most {settings.max_k}", param="k")
        async with admitted():
            if body.vector is not None:
                vector = np.asarray(body.vector, dtype=np.float32)
                if vector.shape != (embedder.dim,) or not np.isfinite(vector).all():
                    raise APIError(400, f"vector: {embedder.dim} finite numbers", param="vector")
            else:
                vector = (await embed(texts_of(body.query, "query")))[0]
            if router is not None:
                hits = await on_shards(router.search, None, body.k, vector.tolist(), body.filter)
            elif settings.index == "flat" or body.filter:  # linear in the corpus or the matches: off the loop
                hits = await run_in_threadpool(lookup, vector, body.k, body.filter)
            else:  # an approximate search of one query takes well under a millisecond, less than a thread hop
                hits = lookup(vector, body.k, body.filter)
        return JSONResponse({"object": "list", "data": hits, "model": settings.served_model_name,
                             "index": settings.index})  # plain JSON types: no jsonable_encoder pass

    def lookup(vector: np.ndarray, k: int, where: dict | None) -> list[dict]:
        t0 = time.perf_counter()
        scores, ids = store.search(vector[None], k, where)
        m.search.observe(time.perf_counter() - t0)
        found = [(float(s), int(i)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]
        docs = store.get([i for _, i in found])
        return [{**docs[i], "score": s} for s, i in found if i in docs]  # a document deleted meanwhile drops out

    def after_change(n: int) -> None:
        m.documents.set(store.size)
        state["changes"] += n
        if state["changes"] >= settings.snapshot_every:
            state["changes"] = 0
            store.snapshot()

    @app.post("/v1/documents", status_code=201, dependencies=[Depends(admit), Depends(writer)])
    async def add_documents(body: AddRequest):
        texts_of([d.text for d in body.documents], "documents")
        if router is not None:  # the shards embed what they store
            return {"ids": await on_shards(router.add, [d.model_dump() for d in body.documents])}
        vectors = await embed([f"{d.title}\n{d.text}" if d.title else d.text for d in body.documents])
        ids = await run_in_threadpool(store.add, [d.model_dump() for d in body.documents], vectors)
        await run_in_threadpool(after_change, len(ids))
        return {"ids": ids}

    @app.get("/v1/documents/{doc_id}")
    async def get_document(doc_id: DocId):
        doc = (await on_shards(router.get, doc_id) if router is not None
               else (await run_in_threadpool(store.get, [doc_id])).get(doc_id))
        if doc is None:
            raise APIError(404, f"no document {doc_id}", param="doc_id")
        return doc

    @app.delete("/v1/documents/{doc_id}", dependencies=[Depends(writer)])
    async def delete_document(doc_id: DocId):
        if router is not None:
            if not await on_shards(router.delete, doc_id):
                raise APIError(404, f"no document {doc_id}", param="doc_id")
            return {"id": doc_id, "deleted": True}
        if not await run_in_threadpool(store.delete, [doc_id]):
            raise APIError(404, f"no document {doc_id}", param="doc_id")
        await run_in_threadpool(after_change, 1)
        return {"id": doc_id, "deleted": True}

    @app.post("/v1/index/rebuild", status_code=202, dependencies=[Depends(writer)])
    async def rebuild():
        if router is not None:  # every shard rebuilds its own index in the background
            await on_shards(router.rebuild)
            return {"rebuilding": True}
        needed = store.spec.train_min
        if needed and (size := await run_in_threadpool(lambda: store.size)) < needed:
            raise APIError(409, f"the {settings.index} index trains on at least {needed} documents and the store "
                           f"holds {size}; searches are exact until then", "conflict")
        with lock:
            if state["rebuilding"]:
                raise APIError(409, "a rebuild is already running", "conflict")
            state["rebuilding"] = True

        def work():
            try:
                store.rebuild()
            finally:
                state["rebuilding"] = False

        threading.Thread(target=work, name="rebuild", daemon=True).start()
        return {"rebuilding": True}

    @app.get("/health")
    async def health():  # no I/O: on the event loop, not a thread hop
        return {"status": "ok"}

    @app.get("/ready")
    async def ready():
        if not state["ready"]:
            raise APIError(503, "starting", "server_error")
        if router is not None:
            try:
                return await run_in_threadpool(router.ready) | {"index": settings.index}
            except ServiceError as e:
                raise APIError(503, f"a shard is not ready: {e}", "server_error") from None
        return {"status": "ready", "documents": store.size, "index": settings.index,
                "rebuilding": state["rebuilding"]}

    @app.get("/version")
    async def version():  # no I/O: on the event loop, not a thread hop
        return {"version": __version__}

    @app.get("/metrics")
    def prometheus_metrics():
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
