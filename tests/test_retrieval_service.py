"""The retrieval service: the official openai client's embeddings, search against the store's exact
search, document writes with auth, limits and overload as 4xx, a kill -9 of the server process losing no
acknowledged document, Prometheus metrics with the recall canary, and a schemathesis run with no 5xx."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from prometheus_client.parser import text_string_to_metric_families

from services.retrieval.app import create_app
from services.retrieval.settings import RetrievalSettings
from tests.conftest import serve

KEY = "sk-retrieval-test"
DOCS = [{"title": "Anarchism", "text": "Anarchism is a political philosophy that advocates stateless societies.",
         "metadata": {"topic": "politics"}},
        {"title": "Autism", "text": "Autism is a neurodevelopmental disorder.", "metadata": {"topic": "medicine"}},
        {"title": "Albedo", "text": "Albedo is the fraction of sunlight that a surface reflects.",
         "metadata": {"topic": "physics"}},
        {"title": "Alabama", "text": "Alabama is a state in the southeastern region of the United States.",
         "metadata": {"topic": "places"}},
        {"title": "Achilles", "text": "Achilles was a hero of the Trojan War in Greek mythology.",
         "metadata": {"topic": "myth"}}] + [
        {"title": f"Note {i}", "text": f"Filler passage number {i} about assorted topics and numbers {i * 7}.",
         "metadata": {"topic": "filler", "n": i}} for i in range(40)]


@pytest.fixture(scope="module")
def embedder():
    from llmlab.retrieval.embed import Embedder

    return Embedder(bf16=False)  # as the service's default (RetrievalSettings.bf16)


@pytest.fixture(scope="module")
def client(embedder, tmp_path_factory):
    from fastapi.testclient import TestClient

    app = create_app(RetrievalSettings(data_dir=tmp_path_factory.mktemp("store"), index="flat", api_key=KEY,
                                       max_batch=50, max_text_chars=2000), embedder=embedder)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/v1/documents", json={"documents": DOCS}, headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 201, r.text
        c.ids = r.json()["ids"]
        yield c


def test_openai_client_embeddings(client, embedder):
    api = openai.OpenAI(base_url="http://testserver/v1", api_key="any", http_client=client)
    got = api.embeddings.create(model="all-MiniLM-L6-v2", input=["Who fought at Troy?", "the fraction reflected"])
    want = embedder.encode(["Who fought at Troy?", "the fraction reflected"])
    assert [d.index for d in got.data] == [0, 1] and got.usage.prompt_tokens > 6
    assert np.abs(np.array([d.embedding for d in got.data]) - want).max() < 1e-6
    b64 = api.embeddings.create(model="all-MiniLM-L6-v2", input="Who fought at Troy?", encoding_format="base64")
    raw = np.frombuffer(base64.b64decode(b64.data[0].embedding), dtype="<f4")  # asked for: returned as sent
    assert np.abs(raw - want[0]).max() < 1e-6
    with pytest.raises(openai.NotFoundError):
        api.embeddings.create(model="text-embedding-3-small", input="x")


def test_search_by_text_vector_and_filter(client, embedder):
    r = client.post("/v1/search", json={"query": "Which hero fought in the Trojan War?", "k": 3}).json()
    assert r["data"][0]["title"] == "Achilles" and len(r["data"]) == 3
    scores = [h["score"] for h in r["data"]]
    assert scores == sorted(scores, reverse=True)
    v = embedder.encode(["sunlight reflected by a surface"])[0]
    store = client.app.state.store
    want = store.exact(v[None], 5)[1][0].tolist()
    r = client.post("/v1/search", json={"vector": v.tolist(), "k": 5}).json()
    assert [h["id"] for h in r["data"]] == want  # a flat index: exactly the exact neighbours
    r = client.post("/v1/search", json={"query": "a hero", "k": 10, "filter": {"topic": "filler"}}).json()
    assert len(r["data"]) == 10 and all(h["metadata"]["topic"] == "filler" for h in r["data"])
    r = client.post("/v1/search", json={"query": "a hero", "k": 5, "filter": {"topic": "nothing"}}).json()
    assert r["data"] == []


def test_documents_need_the_key_and_deletes_stick(client):
    doc = {"documents": [{"title": "Zebra", "text": "Zebras are African equines with black-and-white stripes."}]}
    assert client.post("/v1/documents", json=doc).status_code == 401
    assert client.post("/v1/documents", json=doc, headers={"Authorization": "Bearer wrong"}).status_code == 401
    auth = {"Authorization": f"Bearer {KEY}"}
    (new,) = client.post("/v1/documents", json=doc, headers=auth).json()["ids"]
    assert client.get(f"/v1/documents/{new}").json()["title"] == "Zebra"
    top = client.post("/v1/search", json={"query": "striped African horse", "k": 1}).json()["data"][0]
    assert top["id"] == new
    assert client.delete(f"/v1/documents/{new}").status_code == 401
    assert client.delete(f"/v1/documents/{new}", headers=auth).json() == {"id": new, "deleted": True}
    assert client.delete(f"/v1/documents/{new}", headers=auth).status_code == 404
    assert client.get(f"/v1/documents/{new}").status_code == 404
    top = client.post("/v1/search", json={"query": "striped African horse", "k": 3}).json()["data"]
    assert new not in [h["id"] for h in top]
    assert client.post("/v1/index/rebuild", headers=auth).status_code == 202


@pytest.mark.parametrize("body, param", [
    ({"query": "x", "k": 101}, "k"), ({"query": "x", "k": 0}, "k"), ({"k": 3}, "query"),
    ({"query": "x", "vector": [0.0] * 384}, "query"), ({"vector": [1.0, 2.0]}, "vector"),
    ({"query": "x" * 2001}, "query"), ({"query": ""}, "query"), ({"query": "x", "filter": {"a": [1]}}, "filter.a.str"),
    ({"query": "x", "filter": {'a"]': 1}}, "filter"), ({"query": "x", "filter": {"n": 2**64}}, "filter")])
def test_bad_searches_are_400_with_the_envelope(client, body, param):
    r = client.post("/v1/search", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param and r.json()["error"]["type"] == "invalid_request_error"


def test_limits_metrics_and_canary(client):
    too_many = {"model": "all-MiniLM-L6-v2", "input": ["a"] * 51}
    assert client.post("/v1/embeddings", json=too_many).status_code == 400
    # the body limit: 50 texts of 2,000 characters at 4 bytes each, with room for JSON (516,096 bytes)
    huge = client.post("/v1/embeddings", content=b"x" * 600_000, headers={"content-type": "application/json"})
    assert huge.status_code == 413 and "error" in huge.json()
    assert client.post("/v1/search", json={"query": "a hero", "k": 2}).status_code == 200
    assert client.app.state.canary() == 1.0  # a flat index is exact
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    assert families["llmlab_retrieval_recall_canary"].samples[0].value == 1.0
    assert families["llmlab_retrieval_documents"].samples[0].value == len(DOCS)
    routes = {s.labels["route"] for s in families["llmlab_http_request_duration_seconds"].samples}
    assert {"/v1/search", "/v1/embeddings", "/v1/documents"} <= routes and "/metrics" not in routes
    assert families["llmlab_retrieval_search_seconds"].samples
    assert client.get("/ready").json()["documents"] == len(DOCS)


def serve_retrieval(data: Path, *extra: str):
    return serve("retrieval", "--data", str(data), "--api-key", KEY, *extra, ready="/ready", tries=240)


def locust(base: str, tmp_path: Path, threshold: float) -> subprocess.CompletedProcess:
    """loadtests/run.py --service retrieval against ``base``, its search objective set to ``threshold``."""
    import yaml

    repo = Path(__file__).resolve().parents[1]
    spec = yaml.safe_load((repo / "loadtests" / "slos.yaml").read_text())
    spec["services"]["retrieval"]["latency"][0]["threshold_seconds"] = threshold  # a bucket boundary
    (tmp_path / f"slo-{threshold}.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "questions.txt").write_text("Which hero fought at Troy?\nWhat does albedo measure?\n")
    env = {**os.environ, "LLMLAB_SLO_FILE": str(tmp_path / f"slo-{threshold}.yaml"),
           "LLMLAB_LOADTEST_PROMPTS": str(tmp_path / "questions.txt")}
    return subprocess.run([sys.executable, str(repo / "loadtests" / "run.py"), "--service", "retrieval", "--host",
                           base, "--users", "3", "--duration", "6s", "--out", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=180)


def test_server_process_survives_kill_9_and_sheds_load(tmp_path):
    """A real `llmlab serve retrieval` process: with --max-inflight 1, concurrent searches get 429s with
    Retry-After and no 5xx; the Locust gate passes a lenient search objective and fails an impossible one;
    documents acknowledged over HTTP survive a kill -9 and a restart (HNSW, no snapshot yet: replayed from
    SQLite)."""
    proc, base = serve_retrieval(tmp_path, "--max-inflight", "1")
    auth = {"Authorization": f"Bearer {KEY}"}
    try:
        ids = httpx.post(f"{base}/v1/documents", json={"documents": DOCS}, headers=auth, timeout=120).json()["ids"]
        statuses: list[int] = []

        def hammer():
            with httpx.Client(timeout=60) as c:
                for _ in range(6):
                    r = c.post(f"{base}/v1/search", json={"query": "Which hero fought at Troy?", "k": 3})
                    statuses.append(r.status_code)
                    if r.status_code == 429:
                        assert r.headers["retry-after"] == "1"

        threads = [threading.Thread(target=hammer) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert set(statuses) <= {200, 429} and 429 in statuses and 200 in statuses
        ok = locust(base, tmp_path, 10)
        assert ok.returncode == 0 and "SLO gate passed" in ok.stderr, ok.stdout[-2000:] + ok.stderr[-2000:]
        assert "POST,/v1/search" in (tmp_path / "out" / "retrieval_stats.csv").read_text()
        missed = locust(base, tmp_path, 0.005)
        assert missed.returncode != 0 and "SLO gate failed: POST /v1/search: p95" in missed.stderr
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    proc, base = serve_retrieval(tmp_path)
    try:
        got = httpx.get(f"{base}/v1/documents/{ids[-1]}").json()
        assert got["title"] == DOCS[-1]["title"]
        hit = httpx.post(f"{base}/v1/search", json={"query": "Which hero fought at Troy?", "k": 1}).json()["data"]
        assert hit[0]["title"] == "Achilles"
        assert httpx.get(f"{base}/ready").json()["documents"] == len(DOCS)
    finally:
        proc.terminate()
        proc.wait(30)


class _SchemaOnly:
    """Only for building the OpenAPI schema at collection time (no model load in every xdist worker): the app
    schemathesis drives in the test is the real one, with the real embedder."""
    dim = 384


SCHEMA = schemathesis.openapi.from_dict(create_app(RetrievalSettings(
    data_dir=Path(__import__("tempfile").mkdtemp(prefix="llmlab-schema-")), index="flat"),
    embedder=_SchemaOnly()).openapi())


@SCHEMA.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_5xx_over_the_openapi(case, client):
    kwargs = case.as_transport_kwargs(base_url="http://testserver", headers={"Authorization": f"Bearer {KEY}"})
    if not kwargs.get("cookies"):
        kwargs.pop("cookies", None)
    if isinstance(kwargs.get("data"), bytes | str):
        kwargs["content"] = kwargs.pop("data")
    response = client.request(**kwargs)
    assert response.status_code < 500, (case.method, case.path, case.body, response.status_code, response.text[:300])


@contextlib.contextmanager
def on_loopback(app):
    """``app`` served by uvicorn in a thread on a free 127.0.0.1 port (real HTTP; the test's embedder shared)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)


QUERIES = ("Which hero fought at Troy?", "filler passage about numbers", "a state in the US")


def assert_same_hits(got: list[dict], want: list[dict]) -> None:
    assert [h["text"] for h in got] == [h["text"] for h in want]
    assert np.allclose([h["score"] for h in got], [h["score"] for h in want], atol=1e-6)


def test_two_shards_give_one_index_results(embedder, tmp_path):
    """Documents spread over two services (round robin); a search fans out and merges: the same passages, in
    the same order with the same scores, as one service holding them all. Ids are global (a shard's id times
    the shard count plus the shard): get and delete find the one shard that holds a document."""
    from fastapi.testclient import TestClient

    from llmlab.retrieval.client import RetrievalClient, ShardedRetrieval

    def app(name):
        return TestClient(create_app(RetrievalSettings(data_dir=tmp_path / name, index="flat", max_batch=64),
                                     embedder=embedder))

    with app("one") as one, app("a") as a, app("b") as b:
        single = RetrievalClient("http://testserver", http_client=one)
        sharded = ShardedRetrieval([RetrievalClient("http://testserver", http_client=c) for c in (a, b)])
        single.add(DOCS)
        ids = sharded.add(DOCS)
        assert len(set(ids)) == len(DOCS) and {i % 2 for i in ids} == {0, 1}
        assert [sharded.get(i)["title"] for i in ids] == [d["title"] for d in DOCS]
        for query in QUERIES:
            got = sharded.search(query, k=8)
            assert_same_hits(got, single.search(query, k=8))
            assert all(sharded.get(h["id"])["text"] == h["text"] for h in got)
        got = sharded.search("numbers", k=6, where={"topic": "filler"})
        assert len(got) == 6 and all(h["metadata"]["topic"] == "filler" for h in got)
        achilles = ids[4]
        assert sharded.delete(achilles) and not sharded.delete(achilles) and sharded.get(achilles) is None
        assert "Achilles" not in [h["title"] for h in sharded.search("Which hero fought at Troy?", k=5)]
        assert sharded.get(1) is None and not sharded.delete(0)  # no shard's id 0


def test_router_service_over_two_shard_services(embedder, tmp_path):
    """``llmlab serve retrieval --shard URL --shard URL``: the in-cluster router (the chart's Deployment over
    the shards' StatefulSet). Two shard services on loopback (real HTTP), the router in front: the official
    openai client's embeddings, searches equal to one store's, writes with the key forwarded, global ids,
    readiness and metrics; a shard gone answers 503 in OpenAI's envelope, not a 500 or a partial result."""
    from fastapi.testclient import TestClient

    from llmlab.retrieval.client import RetrievalClient

    def shard(name):
        return create_app(RetrievalSettings(data_dir=tmp_path / name, index="hnsw", api_key=KEY, max_batch=64),
                          embedder=embedder)

    auth = {"Authorization": f"Bearer {KEY}"}
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(on_loopback(shard(n))) for n in ("a", "b")]
        one = stack.enter_context(TestClient(create_app(RetrievalSettings(data_dir=tmp_path / "one", index="hnsw",
                                                                          max_batch=64), embedder=embedder)))
        router = stack.enter_context(TestClient(create_app(RetrievalSettings(shards=urls, api_key=KEY, max_batch=64),
                                                           embedder=embedder), raise_server_exceptions=False))
        RetrievalClient("http://testserver", http_client=one).add(DOCS)
        assert router.post("/v1/documents", json={"documents": DOCS}).status_code == 401  # the router checks the key
        ids = router.post("/v1/documents", json={"documents": DOCS}, headers=auth).json()["ids"]
        assert sorted(i % 2 for i in ids) == [0] * 23 + [1] * 22
        assert [httpx.get(f"{urls[i % 2]}/v1/documents/{i // 2}").json()["title"] for i in ids[:4]] == \
            [d["title"] for d in DOCS[:4]]  # each document on the shard its id names
        ready = router.get("/ready").json()
        assert ready["documents"] == len(DOCS) and ready["shards"] == 2
        for query in QUERIES:
            want = one.post("/v1/search", json={"query": query, "k": 8}).json()["data"]
            got = router.post("/v1/search", json={"query": query, "k": 8}).json()["data"]
            assert_same_hits(got, want)
            assert all(router.get(f"/v1/documents/{h['id']}").json()["text"] == h["text"] for h in got)
        api = openai.OpenAI(base_url="http://testserver/v1", api_key="any", http_client=router)
        vec = api.embeddings.create(model="all-MiniLM-L6-v2", input="Who fought at Troy?").data[0].embedding
        by_vector = router.post("/v1/search", json={"vector": vec, "k": 3}).json()["data"]
        assert by_vector[0]["title"] == "Achilles"
        filtered = router.post("/v1/search", json={"query": "numbers", "k": 5, "filter": {"topic": "filler"}}).json()
        assert len(filtered["data"]) == 5 and {h["metadata"]["topic"] for h in filtered["data"]} == {"filler"}
        achilles = by_vector[0]["id"]
        assert router.delete(f"/v1/documents/{achilles}", headers=auth).json() == {"id": achilles, "deleted": True}
        assert router.get(f"/v1/documents/{achilles}").status_code == 404
        assert router.delete(f"/v1/documents/{achilles}", headers=auth).status_code == 404
        assert router.post("/v1/index/rebuild", headers=auth).status_code == 202
        assert router.post("/v1/search", json={"query": "x", "k": 101}).status_code == 400  # its own limits
        families = {f.name for f in text_string_to_metric_families(router.get("/metrics").text)}
        assert "llmlab_http_request_duration_seconds" in families  # its shards export the index's figures
        assert not families & {"llmlab_retrieval_documents", "llmlab_retrieval_recall_canary"}
        stack.close()  # the shards stop; the router stays
    with TestClient(create_app(RetrievalSettings(shards=urls, api_key=KEY, shard_timeout_s=2),
                               embedder=embedder), raise_server_exceptions=False) as router:
        r = router.post("/v1/search", json={"query": "Which hero fought at Troy?", "k": 3})
        assert r.status_code == 503 and r.json()["error"]["type"] == "server_error", r.text
        assert router.get("/ready").status_code == 503 and router.get("/health").status_code == 200
    with pytest.raises(ValueError, match="exactly one of data_dir"):
        RetrievalSettings(data_dir=tmp_path, shards=urls)


def test_an_ivf_service_starts_empty_and_answers_exactly_until_trained(embedder, tmp_path):
    """``--index ivf_pq_refine`` (or any IVF) on an empty store: the service starts, and until the store holds
    enough documents for k-means (here 256 for PQ's codebooks) searches are exact over SQLite."""
    from fastapi.testclient import TestClient

    settings = RetrievalSettings(data_dir=tmp_path, index="ivf_pq_refine", nlist=4, pq_bytes=8, nprobe=4)
    with TestClient(create_app(settings, embedder=embedder)) as c:
        assert c.get("/ready").json() == {"status": "ready", "documents": 0, "index": "ivf_pq_refine",
                                          "rebuilding": False}
        assert c.post("/v1/documents", json={"documents": DOCS}).status_code == 201
        r = c.post("/v1/index/rebuild")  # nothing to train on yet: a clear 409, not a failed background thread
        assert r.status_code == 409 and "at least 256 documents" in r.json()["error"]["message"]
        v = embedder.encode(["sunlight reflected by a surface"])[0]
        got = c.post("/v1/search", json={"vector": v.tolist(), "k": 5}).json()["data"]
        assert [h["id"] for h in got] == c.app.state.store.exact(v[None], 5)[1][0].tolist()


def test_prompt_and_citations():
    from llmlab.retrieval.rag import build_prompt, citations

    hits = [{"title": "Achilles", "text": "Achilles was a hero."}, {"title": "Troy", "text": "Troy " * 200},
            {"title": "Ithaca", "text": "Ithaca"}]
    p = build_prompt("Who was Achilles?", hits, max_chars=400)  # the passage that does not fit is cut at a word
    assert "[1] Achilles: Achilles was a hero.\n\n[2] Troy: Troy Troy" in p and "[3]" not in p and "Tro\n" not in p
    assert p.endswith("\n\nQuestion: Who was Achilles?\nAnswer:") and 380 <= len(p) <= 400
    assert "[2]" not in build_prompt("Who was Achilles?", hits, max_chars=300)  # under 200 characters left: none
    assert citations("a hero [2] of Troy [1][2] [7]", 3) == [2, 1]


def test_rag_through_both_services(embedder, tmp_path):
    """question -> the retrieval service -> a cited prompt -> llmlab's inference service (a real process, the
    official openai client) -> an answer, scored. The model is an untrained character-level one with a
    320-character context: the pipeline is under test, not the answers (EM and F1 are what they are). Prompts
    of 3 passages run over that context; the server's 400 makes the pipeline shorten them until they fit."""
    from fastapi.testclient import TestClient

    from llmlab import hf
    from llmlab.retrieval.client import RetrievalClient
    from llmlab.retrieval.rag import evaluate
    from llmlab.tokenization.char import CharTokenizer
    from llmlab.transformer import TransformerConfig, TransformerLM
    from tests.conftest import serve_inference

    text = " ".join(d["title"] + " " + d["text"] for d in DOCS) + "?[]:\nAQWabcdefghijklmnopqrstuvwxyz0123456789.,'"
    tok = CharTokenizer.train(text)
    model = TransformerLM(TransformerConfig(tok.vocab_size, context=320, d_model=16, n_heads=2, n_layers=1), seed=0)
    folder = hf.export(model, tmp_path / "reader", tok)
    proc, base = serve_inference(folder)
    try:
        with TestClient(create_app(RetrievalSettings(data_dir=tmp_path / "store", index="flat"),
                                   embedder=embedder)) as c:
            retriever = RetrievalClient("http://testserver", http_client=c)
            retriever.add(DOCS)
            llm = openai.OpenAI(base_url=f"{base}/v1", api_key="none")
            questions = [{"question": "Which hero fought in the Trojan War?", "answers": ["Achilles"]},
                         {"question": "What fraction of sunlight does a surface reflect?", "answers": ["albedo"]},
                         {"question": "Which state is in the southeastern United States?", "answers": ["Alabama"]}]
            result = evaluate(questions, retriever, llm, "reader", k=3, max_tokens=8, max_prompt_chars=3000)
    finally:
        proc.terminate()
        proc.wait(30)
    assert result["questions"] == 3 and result["recall@3"] == 1.0  # every gold passage retrieved
    assert 0 <= result["exact_match"] <= result["f1"] <= 1
    assert result["prompts_shortened"] == 3  # every 3-passage prompt was over the 320-character context
    for row in result["rows"]:
        assert row["shortened"] >= 1 and len(tok.encode(row["prompt"])) < 320 and row["prompt_passages"] >= 1
    row = result["rows"][0]
    assert row["hits"][0]["title"] == "Achilles" and "[1] Achilles" in row["prompt"] and isinstance(row["answer"], str)


def test_reader_text_cites_the_gold_passage():
    from llmlab.retrieval.rag import reader_text

    passages = [{"pid": f"wiki:{i}", "title": f"T{i}", "text": f"filler {i}"} for i in range(5)]
    passages.append({"pid": "squad:0", "title": "Achilles", "text": "Achilles fought at Troy."})
    questions = [{"question": f"Where did Achilles fight? ({i})", "answers": ["Troy"], "row": 5} for i in range(20)]
    examples = reader_text(questions, passages, 400).split("\n\n\n")[0].split(
        "Answer the question")[1:]  # one example per prompt
    assert len(examples) == 20
    for ex in examples:  # the cited number is the gold passage's, never another question's paragraph
        n = ex.rsplit("[", 1)[1][0]
        assert f"[{n}] Achilles: Achilles fought at Troy." in ex and ex.rstrip().endswith(f"Troy [{n}]")
        assert "squad" not in ex and ex.count("Achilles fought") == 1
    assert {ex.rsplit("[", 1)[1][0] for ex in examples} == {"1", "2"}  # the gold passage comes first or second


def test_a_service_that_cannot_start_says_why(tmp_path):
    from llmlab import serving

    with pytest.raises(RuntimeError, match="(?s)exited with code 2.*not a model folder"):
        serving.start("inference", "--model", str(tmp_path / "nowhere"), timeout=60)
