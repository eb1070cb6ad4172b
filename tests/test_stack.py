"""`llmlab up | status | down` with a real Ray head, the grading service and Prometheus on loopback;
Prometheus scrapes the service while traffic flows, and every SLO query returns data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from llmlab.platform import dashboards, slo
from tests.conftest import free_port, m01_source, needs, prometheus_query

pytestmark = pytest.mark.ray
CLI = str(Path(sys.executable).with_name("llmlab"))




def test_up_status_down_with_prometheus(ray_address, tmp_path):
    needs(shutil.which("prometheus") is not None, "prometheus (Debian package) is not installed")
    gport, pport, iport, rport = free_port(), free_port(), free_port(), free_port()
    from llmlab import hf
    from llmlab.tokenization import CharTokenizer
    from llmlab.transformer import TransformerConfig, TransformerLM

    tok = CharTokenizer.train("abcdefgh ")
    model = hf.export(TransformerLM(TransformerConfig(tok.vocab_size, context=32, d_model=16, n_heads=2), seed=0),
                      tmp_path / "tiny", tok)
    env = {**os.environ, "LLMLAB_STACK_DIR": str(tmp_path / "stack"),
           "LLMLAB_GRADER_DATABASE_URL": f"sqlite:///{tmp_path / 'g.sqlite'}",
           "LLMLAB_GRADER_FILES_DIR": str(tmp_path / "files"), "LLMLAB_GRADER_RECONCILE_INTERVAL_S": "0.3"}
    run = lambda *a: subprocess.run([CLI, *a], env=env, capture_output=True, text=True, timeout=300)
    r = run("up", "--grader-port", str(gport), "--prometheus-port", str(pport), "--model", str(model),
            "--inference-port", str(iport), "--retrieval", "--retrieval-port", str(rport), "--json")
    assert r.returncode == 0, r.stderr
    try:
        parts = {p["name"]: p for p in json.loads(r.stdout)}
        assert all(p["healthy"] for p in parts.values()), parts
        assert parts["grader"]["started_by_up"] and parts["prometheus"]["started_by_up"]
        assert parts["inference"]["started_by_up"] and parts["retrieval"]["started_by_up"]
        base = parts["retrieval"]["url"]
        r = httpx.post(f"{base}/v1/documents", timeout=60, json={"documents": [
            {"title": "Albedo", "text": "Albedo is the fraction of sunlight a surface reflects."},
            {"title": "Alabama", "text": "Alabama is a state in the southeastern United States."}]})
        assert r.status_code == 201, r.text
        for query in ("reflected sunlight", "a southern state", "snow"):
            assert httpx.post(f"{base}/v1/search", json={"query": query, "k": 2}, timeout=30).status_code == 200
            assert httpx.post(f"{base}/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": query},
                              timeout=30).status_code == 200
        for stream in (False, True):
            r = httpx.post(f"{parts['inference']['url']}/v1/completions", timeout=30,
                           json={"model": "tiny", "prompt": "abc", "max_tokens": 8, "stream": stream})
            assert r.status_code == 200, r.text
        assert not parts["ray"]["started_by_up"]  # the session's head was already there: not ours to stop
        grader, prom = parts["grader"]["url"], parts["prometheus"]["url"]
        token = run("learners", "add", "eve").stdout.strip()
        h = {"Authorization": f"Bearer {token}"}
        ids = []
        for bug in (None, "svd_ascending"):
            src = m01_source(bug).encode()
            ids.append(httpx.post(f"{grader}/v1/submissions", data={"lab": "m01"}, files={"file": ("s.py", src)},
                                  headers=h).json()["id"])
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            states = [httpx.get(f"{grader}/v1/submissions/{i}", headers=h).json()["state"] for i in ids]
            httpx.get(f"{grader}/v1/gradebook", headers=h)
            if all(s == "graded" for s in states):
                break
            time.sleep(0.5)
        assert states == ["graded", "graded"]
        time.sleep(12)  # two more scrapes and rule evaluations (5 s interval)
        targets = httpx.get(f"{prom}/api/v1/targets").json()["data"]["activeTargets"]
        assert [t["health"] for t in targets] == ["up", "up", "up"]
        for o in slo.load():
            for window in ("5m", "1h"):
                series = prometheus_query(prom, f"{o.record}:ratio_rate{window}")
                assert series, f"no data for {o.record}:ratio_rate{window}"
        assert float(prometheus_query(prom, 'sum(llmlab_submissions_total{outcome="graded"})')[0]["value"][1]) == 2
        for name in dashboards.STACK_DASHBOARDS:  # every query is valid PromQL; over the services' metrics, has data
            for expr in dashboards.queries(name):
                result = prometheus_query(prom, expr)  # the inference dashboard: llmlab's engine under vLLM's names
                assert result, f"{name} dashboard: no data for {expr}"
        assert prometheus_query(prom, "histogram_quantile(0.95, sum by (le) "
                                      "(rate(llmlab_grading_duration_seconds_bucket[5m])))")
        status = json.loads(run("status", "--json").stdout)
        assert all(p["healthy"] for p in status)
    finally:
        r = run("down")
    assert r.returncode == 0 and "grader" in r.stdout and "prometheus" in r.stdout and "ray" not in r.stdout
    assert "inference" in r.stdout and "retrieval" in r.stdout
    after = {p["name"]: p["healthy"] for p in json.loads(run("status", "--json").stdout)}
    assert after == {"ray": True, "grader": False, "prometheus": False}
