"""The inference service as users meet it: a real `llmlab serve inference` process on 127.0.0.1 and the
official `openai` client (completions, chat, streaming, errors), a burst several times the queue size (429s,
no crash), vLLM-named metrics, and the vLLM argument mapping checked against the Helm chart (vLLM itself
cannot be installed on CPU machines)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from llmlab.inference import Engine, SamplingParams
from llmlab.platform import chart
from services.inference import vllm as vllm_args
from services.inference.settings import InferenceSettings
from tests.conftest import TEXT
from tests.conftest import serve_inference as _serve

CLI = str(Path(sys.executable).with_name("llmlab"))


@pytest.fixture(scope="module")
def model_dir(tiny_model) -> Path:
    return tiny_model


@pytest.fixture(scope="module")
def server(model_dir):
    proc, base = _serve(model_dir, "--max-batch", "2", "--max-waiting", "4", "--api-key", "sk-test")
    yield base
    proc.kill()
    proc.wait()


def test_openai_client_completions_chat_and_streaming(server, model_dir):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="sk-test")
    assert [m.id for m in client.models.list().data] == ["tiny"]
    r = client.completions.create(model="tiny", prompt="the quick", max_tokens=12, temperature=0)
    engine = Engine.from_folder(model_dir)
    want = engine.generate(["the quick"], SamplingParams(max_tokens=12, temperature=0))[0]
    assert r.choices[0].text == want.text and r.usage.completion_tokens == 12 and r.usage.prompt_tokens == 9
    assert r.choices[0].finish_reason == "length"
    chunks = list(client.completions.create(model="tiny", prompt="the quick", max_tokens=12, temperature=0,
                                            stream=True))
    assert "".join(c.choices[0].text for c in chunks) == want.text and chunks[-1].choices[0].finish_reason == "length"
    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=5,
                                          seed=1)
    assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens == 5
    parts = list(client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=5, seed=1, stream=True,
                                                stream_options={"include_usage": True}))
    assert "".join(p.choices[0].delta.content or "" for p in parts if p.choices) == chat.choices[0].message.content
    assert parts[-1].usage.completion_tokens == 5
    lp = client.completions.create(model="tiny", prompt="fox", max_tokens=3, logprobs=2, temperature=0)
    token_logprobs = lp.choices[0].logprobs.token_logprobs
    assert len(token_logprobs) == 3 and all(x <= 0 for x in token_logprobs)


def test_errors_use_the_openai_envelope(server):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="sk-test")
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-5", prompt="x")
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.completions.create(model="tiny", prompt="the " * 40)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny", prompt="x", temperature=5)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server}/v1", api_key="wrong").models.list()
    r = httpx.post(f"{server}/v1/completions", json={"model": "tiny"}, headers={"Authorization": "Bearer sk-test"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"


def test_overload_gets_429_and_the_server_survives(server):
    async def burst():
        async with httpx.AsyncClient(base_url=server, headers={"Authorization": "Bearer sk-test"}, timeout=60) as c:
            body = {"model": "tiny", "prompt": "the quick brown", "max_tokens": 24}
            return await asyncio.gather(*(c.post("/v1/completions", json=body) for _ in range(40)))

    codes = [r.status_code for r in asyncio.run(burst())]
    assert set(codes) <= {200, 429} and codes.count(429) > 0 and codes.count(200) >= 2
    throttled = next(r for r in asyncio.run(burst()) if r.status_code == 429)
    assert throttled.headers["Retry-After"] and throttled.json()["error"]["type"] == "rate_limit_exceeded"
    assert httpx.get(f"{server}/health").status_code == 200
    metrics = httpx.get(f"{server}/metrics").text
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:prompt_tokens_total",
                 "vllm:generation_tokens_total", "vllm:time_to_first_token_seconds_bucket",
                 "vllm:inter_token_latency_seconds_bucket", "vllm:e2e_request_latency_seconds_bucket",
                 'vllm:request_success_total{finished_reason="length",model_name="tiny"}',
                 "vllm:spec_decode_num_drafts_total", "vllm:kv_cache_usage_perc"):
        assert name in metrics, name
    generated = next(float(line.split()[-1]) for line in metrics.splitlines()
                     if line.startswith("vllm:generation_tokens_total"))
    assert generated >= 24 * codes.count(200)
    # HTTP requests counted as vLLM's server counts them (the availability SLO reads this)
    counted = {line.split()[0]: float(line.split()[-1]) for line in metrics.splitlines()
               if line.startswith("http_requests_total{")}
    ok = counted['http_requests_total{handler="/v1/completions",method="POST",status="2xx"}']
    shed = counted['http_requests_total{handler="/v1/completions",method="POST",status="4xx"}']
    assert ok >= codes.count(200) and shed >= codes.count(429)
    assert not any('"/metrics"' in k or '"/health"' in k for k in counted)


def test_locust_gate(server, tmp_path):
    """loadtests/run.py --service inference: streamed chats with TTFT as a custom event, held to the SLO file;
    a lenient file passes, an impossible TTFT objective fails (the gate's mechanism, not this machine's speed)."""
    import yaml

    repo = Path(__file__).resolve().parents[1]

    def run(threshold: float):
        spec = yaml.safe_load((repo / "loadtests" / "slos.yaml").read_text())
        spec["services"]["inference"]["latency"][0]["threshold_seconds"] = threshold  # both are bucket boundaries
        (tmp_path / f"slo-{threshold}.yaml").write_text(yaml.safe_dump(spec))
        (tmp_path / "prompts.txt").write_text("the quick brown\nTHE LAZY DOG\nfox jumps over\n")  # the tiny vocabulary
        env = {**os.environ, "LLMLAB_SLO_FILE": str(tmp_path / f"slo-{threshold}.yaml"), "LLMLAB_API_KEY": "sk-test",
               "LLMLAB_LOADTEST_MAX_TOKENS": "24", "LLMLAB_LOADTEST_PROMPTS": str(tmp_path / "prompts.txt")}
        return subprocess.run([sys.executable, str(repo / "loadtests" / "run.py"), "--service", "inference", "--host",
                               server, "--users", "3", "--duration", "8s", "--out", str(tmp_path / "out")],
                              env=env, capture_output=True, text=True, timeout=180)

    ok = run(30)
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-3000:]
    assert "SLO gate passed" in ok.stderr and "SLO TTFT /v1/chat/completions: p95" in ok.stderr
    stats = (tmp_path / "out" / "inference_stats.csv").read_text()
    assert "TTFT,/v1/chat/completions" in stats and "POST,/v1/chat/completions" in stats
    missed = run(0.001)
    assert missed.returncode != 0 and "SLO gate failed: TTFT /v1/chat/completions: p95" in missed.stderr


def test_speculative_server_counts_drafts(model_dir):
    proc, base = _serve(model_dir, "--ngram", "3,1", "--spec-tokens", "3")
    try:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="none")
        r = client.completions.create(model="tiny", prompt=TEXT[:40], max_tokens=20, temperature=0)
        engine = Engine.from_folder(model_dir)
        assert r.choices[0].text == engine.generate([TEXT[:40]], SamplingParams(max_tokens=20, temperature=0))[0].text
        metrics = httpx.get(f"{base}/metrics").text
        drafts = next(float(x.split()[-1]) for x in metrics.splitlines()
                      if x.startswith("vllm:spec_decode_num_drafts_total"))
        assert drafts > 0
    finally:
        proc.kill()
        proc.wait()


def test_vllm_arguments_equal_the_charts():
    """The same settings give the same `vllm serve` arguments from llmlab and from the Helm chart."""
    for scenario in ("gpu-vllm-spec", "full"):
        values = chart.scenario(scenario)
        docs = chart.render(values)
        dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("inference"))
        rendered = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        merged = chart.merged_values(values)["inference"]
        s = merged["speculative"]
        spec = vllm_args.speculative_config(s["method"], s["numSpeculativeTokens"], s.get("draftModel"),
                                            (s["promptLookupMax"], s["promptLookupMin"])) if s["enabled"] else None
        ours = vllm_args.vllm_serve_args(merged["model"], served_model_name=merged["servedModelName"],
                                         max_model_len=merged["maxModelLen"], port=merged["port"],
                                         gpu_memory_utilization=merged["gpuMemoryUtilization"],
                                         download_dir="/models/cache", speculative=spec)
        assert ours[:-1] == rendered[:-1] if spec else ours == rendered
        if spec:
            assert json.loads(ours[-1].split("=", 1)[1]) == json.loads(rendered[-1].split("=", 1)[1])
        # the service's own launch, driven by its settings as the builtin engine is, gives the same arguments
        settings = InferenceSettings(engine="vllm", model=merged["model"], served_model_name=merged["servedModelName"],
                                     max_model_len=merged["maxModelLen"], download_dir="/models/cache",
                                     gpu_memory_utilization=merged["gpuMemoryUtilization"], dtype="bfloat16",
                                     draft_model=s.get("draftModel") if s["enabled"] and s["method"] == "draft_model"
                                     else None, spec_tokens=s["numSpeculativeTokens"],
                                     ngram=(s["promptLookupMax"], s["promptLookupMin"])
                                     if s["enabled"] and s["method"] == "ngram" else None)
        launched = vllm_args.command(settings, "0.0.0.0", merged["port"])
        assert launched[:2] == ["vllm", "serve"] and "--dtype=bfloat16" in launched
        assert [a for a in launched[2:] if not a.startswith("--dtype")] == ours
    with pytest.raises(ValueError):
        vllm_args.speculative_config("draft_model", 4)
    assert "vllm" not in sys.modules  # the vLLM path is contract-tested, never imported


@pytest.mark.slow
def test_compiled_server_answers_as_the_eager_engine(model_dir):
    """`serve inference --compile` builds its torch.compile graphs before it answers /health (so startup
    takes longer), then serves the same greedy text as the eager engine in-process."""
    prompts = ["the quick", "THE", "lazy dog. the"]
    want = [r.text for r in Engine.from_folder(model_dir).generate(prompts, SamplingParams(max_tokens=24,
                                                                                           temperature=0))]
    proc, base = _serve(model_dir, "--compile", tries=600)
    try:
        assert httpx.get(f"{base}/version").json()["compile"] is True
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="none")
        got = [client.completions.create(model="tiny", prompt=p, max_tokens=24, temperature=0).choices[0].text
               for p in prompts]
        assert got == want
    finally:
        proc.kill()
        proc.wait()
