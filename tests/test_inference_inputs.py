"""The inference service answers every input with a status and keeps serving: token ids and sampling
parameters validated at the edge (400 in OpenAI's envelope), bounded prompts and stop strings, a request
whose batch fails fails alone, a client that goes away aborts its request, chat logprobs, an API key
required beyond loopback, and a schemathesis run over its OpenAPI that finds no 5xx."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from llmlab import hf
from llmlab.inference import Engine, SamplingParams
from llmlab.inference.serving import AsyncEngine
from llmlab.tokenization import CharTokenizer
from llmlab.transformer import TransformerConfig, TransformerLM
from tests.conftest import TEXT, serve_inference

KEY = "sk-inputs"


@pytest.fixture(scope="module")
def long_model(tmp_path_factory) -> Path:
    """A tiny model with a long context, so that a request can run long enough to be abandoned."""
    tok = CharTokenizer.train(TEXT)
    model = TransformerLM(TransformerConfig(tok.vocab_size, context=1024, d_model=32, n_heads=2), seed=0)
    return hf.export(model, tmp_path_factory.mktemp("long") / "long", tok)


@pytest.fixture(scope="module")
def server(long_model):
    proc, base = serve_inference(long_model, "--max-batch", "4", "--max-waiting", "4", "--api-key", KEY)
    yield base, proc
    proc.kill()
    proc.wait()


def _post(base: str, path: str, body: dict, **kw) -> httpx.Response:
    """POST JSON as Python writes it (NaN included, as a hostile client may send it)."""
    return httpx.post(f"{base}{path}", content=json.dumps(body), timeout=60, **kw,
                      headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})


def _alive(base: str) -> None:
    assert httpx.get(f"{base}/health").status_code == 200
    r = _post(base, "/v1/completions", {"model": "long", "prompt": "the", "max_tokens": 3})
    assert r.status_code == 200, r.text


def _metric(base: str, name: str) -> float:
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith(name):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name}")


VOCAB = CharTokenizer.train(TEXT).vocab_size


@pytest.mark.parametrize("body, status, needle", [
    ({"prompt": [VOCAB]}, 400, "token ids"),
    ({"prompt": [10**20]}, 400, "token ids"),
    ({"prompt": [-1, 2]}, 400, "token ids"),
    ({"prompt": "the", "seed": 2**70}, 400, "seed"),
    ({"prompt": "the", "stop": ["x"] * 20_000}, 400, "stop strings"),
    ({"prompt": "the", "stop": "y" * 1000}, 400, "stop strings"),
    ({"prompt": "the", "temperature": float("nan")}, 400, "temperature"),
    ({"prompt": "the", "max_tokens": 0}, 400, "max_tokens"),
    ({"prompt": "x" * 1_100_000}, 400, "prompt is over"),
    ({"prompt": "x" * 30_000_000}, 413, "byte limit"),
    ({"prompt": [1, True]}, 200, None),
    ({"prompt": "the", "temperature": 1e-320}, 200, None),
    ({"prompt": "the", "top_k": 10**9, "temperature": 1}, 200, None),
    ({"prompt": "the", "seed": 2**63 - 1, "temperature": 1}, 200, None),
], ids=["id-vocab", "id-huge", "id-negative", "seed-huge", "stop-many", "stop-long", "temperature-nan",
        "max-tokens-0", "prompt-over-limit", "body-30MB", "bool-as-id", "temperature-tiny", "top-k-huge",
        "seed-max"])
def test_bad_inputs_fail_alone(server, body, status, needle):
    base, _ = server
    r = _post(base, "/v1/completions", {"model": "long", "max_tokens": 4, **body})
    assert r.status_code == status, r.text[:300]
    if needle:
        error = r.json()["error"]
        assert needle in error["message"] and error["code"] == status
    _alive(base)


def test_a_client_that_goes_away_aborts_its_request(server):
    """Four streams read one chunk and hang up; one plain request times out on the client's side. All five
    end as `abort` within a second or two, and they generate a small part of what they asked for."""
    base, _ = server
    aborted = _metric(base, 'vllm:request_success_total{finished_reason="abort"')
    before = _metric(base, "vllm:generation_tokens_total")
    body = {"model": "long", "prompt": "the quick", "max_tokens": 1000, "temperature": 1, "seed": 1, "stream": True}
    for _ in range(4):
        with httpx.stream("POST", f"{base}/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"},
                          timeout=30) as r:
            next(r.iter_lines())  # the first event, then hang up
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{base}/v1/completions", json={**body, "stream": False},
                   headers={"Authorization": f"Bearer {KEY}"}, timeout=0.3)
    deadline = time.monotonic() + 20
    while _metric(base, 'vllm:request_success_total{finished_reason="abort"') < aborted + 5:
        assert time.monotonic() < deadline, "abandoned requests were not aborted"
        time.sleep(0.2)
    assert _metric(base, "vllm:generation_tokens_total") - before < 5 * 1000 / 2
    assert _metric(base, "vllm:num_requests_running") == 0
    _alive(base)


def test_chat_logprobs(server):
    base, _ = server
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY)
    r = client.chat.completions.create(model="long", messages=[{"role": "user", "content": "hi"}], max_tokens=6,
                                       temperature=0, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens == 6
    assert "".join(c.token for c in content) == r.choices[0].message.content
    for c in content:
        assert c.logprob <= 0 and len(c.top_logprobs) == 3
        assert c.top_logprobs[0].logprob == pytest.approx(c.logprob)  # greedy: the chosen token is the top one
        assert bytes(c.bytes).decode() == c.token


def test_an_api_key_is_required_beyond_loopback(tiny_model):
    cli = str(Path(sys.executable).with_name("llmlab"))
    r = subprocess.run([cli, "serve", "inference", "--model", str(tiny_model), "--host", "0.0.0.0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "API key" in r.stderr


def test_a_failing_batch_fails_alone_and_the_engine_serves_on(tiny_model):
    """A model forward that raises (injected in the prefill: no input is known to do it after validation)
    fails the requests of that batch; the next request is served and the engine stays alive."""
    engine = Engine.from_folder(tiny_model, max_batch=2)
    runner = AsyncEngine(engine).start()
    real, calls = engine._forward, []

    def forward_failing_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected fault")
        return real(*args, **kwargs)

    engine._forward = forward_failing_once

    async def one(prompt):
        stream = runner.submit(engine.tokenizer.encode(prompt), SamplingParams(max_tokens=4, temperature=0))
        async for _, req, final in runner.stream(stream):
            if final:
                return req.text

    async def scenario():
        with pytest.raises(RuntimeError, match="injected fault"):
            await one("the")
        return await one("the")

    try:
        assert len(asyncio.run(scenario())) == 4 and runner.alive
    finally:
        runner.stop()


def test_a_slow_stream_reader_gets_every_token(tiny_model):
    """A consumer that reads each item only after the engine has finished the request still receives the
    final item (the engine thread's request object says finished early; the queue's own flag decides)."""
    import asyncio

    engine = Engine.from_folder(tiny_model)
    runner = AsyncEngine(engine).start()
    want = engine.generate(["the quick"], SamplingParams(max_tokens=12, temperature=0))[0]

    async def slow():
        stream = runner.submit(engine.tokenizer.encode("the quick"), SamplingParams(max_tokens=12, temperature=0))
        ids, last = [], None
        async for item in runner.stream(stream):
            ids += item[0]
            last = item
            await asyncio.sleep(0.3)  # the engine finishes meanwhile
        return ids, last[1].text, last[2]

    try:
        ids, text, final = asyncio.run(slow())
    finally:
        runner.stop()
    assert final and ids == want.output_ids and text == want.text


def test_a_dead_engine_loop_fails_health_and_asks_to_exit(tiny_model):
    engine = Engine.from_folder(tiny_model)
    exits = []
    runner = AsyncEngine(engine, on_fatal=lambda: exits.append(1))
    runner._observe = lambda: (_ for _ in ()).throw(MemoryError("injected"))  # the loop's own code fails
    runner.start()
    runner._thread.join(timeout=10)  # the loop dies on its first idle tick, after calling on_fatal
    assert not runner.alive and exits == [1]
    runner.stop()


def _fuzz_app():
    """The app schemathesis drives, in process (its schema is needed at collection, its lifespan runs in
    the ``fuzz_client`` fixture)."""
    import tempfile

    from services.inference.app import create_app
    from services.inference.settings import InferenceSettings

    tok = CharTokenizer.train(TEXT)
    model = TransformerLM(TransformerConfig(tok.vocab_size, context=64, d_model=16, n_heads=2), seed=0)
    folder = hf.export(model, Path(tempfile.mkdtemp(prefix="llmlab-fuzz-")) / "fuzz", tok)
    return create_app(InferenceSettings(model=folder, api_key=KEY, max_waiting=1000))


FUZZ_APP = _fuzz_app()
SCHEMA = schemathesis.openapi.from_dict(FUZZ_APP.openapi())


@pytest.fixture(scope="module")
def fuzz_client():
    from fastapi.testclient import TestClient

    with TestClient(FUZZ_APP, raise_server_exceptions=False) as client:
        yield client


@SCHEMA.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_5xx_over_the_openapi(case, fuzz_client):
    kwargs = case.as_transport_kwargs(base_url="http://testserver", headers={"Authorization": f"Bearer {KEY}"})
    if not kwargs.get("cookies"):
        kwargs.pop("cookies", None)  # per-request cookies are deprecated in Starlette's test client
    if isinstance(kwargs.get("data"), bytes | str):
        kwargs["content"] = kwargs.pop("data")  # raw bodies go as content
    response = fuzz_client.request(**kwargs)
    assert response.status_code < 500, (case.method, case.path, case.body, response.status_code, response.text[:300])
