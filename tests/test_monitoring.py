"""Lab m19's library against Prometheus itself: histogram_quantile and rate/increase evaluated by
promtool's PromQL engine on the same series (its unit-test runner, whose report carries the values it got),
and the burn-rate alerts against llmlab's generated SLO rules."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from llmlab.monitoring import promql
from tests.conftest import needs

SENTINEL = -123456.0  # the expected value promtool is told, so that it reports the value it got


def promtool_eval(tmp_path, series: dict[str, list[float]], exprs: list[tuple[str, int]], interval: int = 15):
    """Each (PromQL expression, evaluation time in s) evaluated by promtool on ``series`` (name{labels} ->
    values every ``interval`` seconds from 0): a dict expr@time -> the single value it got."""
    needs(shutil.which("promtool") is not None, "promtool (Debian package prometheus) is not installed")
    doc = {"evaluation_interval": f"{interval}s",  # the runner loads samples up to each step of this interval
           "tests": [{"interval": f"{interval}s",
                      "input_series": [{"series": s, "values": " ".join(repr(float(v)) for v in vs)}
                                       for s, vs in series.items()],
                      "promql_expr_test": [{"expr": e, "eval_time": f"{t}s",
                                            "exp_samples": [{"labels": "{}", "value": SENTINEL}]} for e, t in exprs]}]}
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, timeout=120)
    got = {}
    for m in re.finditer(r'expr: "(.*?)", time: (\S+),\n\s+exp: .*\n\s+got: \{[^}]*\} (\S+)', out.stdout + out.stderr):
        got[m.group(1)] = float(m.group(3))
    missing = [e for e, _ in exprs if e not in got]
    assert not missing, f"promtool gave no value for {missing}:\n{out.stdout[-2000:]}"
    return got


def test_histogram_quantile_is_prometheus(tmp_path):
    rng = np.random.default_rng(0)
    series, exprs, ours = {}, [], {}
    for h in range(4):
        les = sorted(set(np.round(rng.uniform(0.01, 5, rng.integers(2, 7)), 3)))
        if h == 3:
            les = [-1.0, 0.0] + les  # bounds at or below zero
        counts = np.cumsum(rng.integers(0, 12, len(les) + 1)).astype(float)
        if h == 2:
            counts[-1] = counts[-2]  # nothing in +Inf
        bounds = [*les, math.inf]
        for le, c in zip(bounds, counts, strict=True):
            series[f'h{h}_bucket{{le="{"+Inf" if le == math.inf else repr(float(le))}"}}'] = [c] * 8
        for q in (0.0, 0.05, 0.5, 0.9, 0.95, 0.99, 1.0):
            expr = f"histogram_quantile({q}, h{h}_bucket)"
            exprs.append((expr, 60))
            ours[expr] = promql.histogram_quantile(q, list(zip(bounds, counts, strict=True)))
    got = promtool_eval(tmp_path, series, exprs)
    for expr, value in ours.items():  # NaN where Prometheus gives NaN too (an empty first bucket at q = 0)
        assert got[expr] == pytest.approx(value, rel=1e-12, abs=1e-12, nan_ok=True), expr
    assert sum(math.isnan(v) for v in ours.values()) < 3


def test_rate_and_increase_are_prometheus(tmp_path):
    """Counters with resets, samples missing (a scrape gap) and windows that start before the series."""
    rng = np.random.default_rng(1)
    values = np.cumsum(rng.integers(0, 20, 80)).astype(float)
    values[30:] -= values[29] - 5  # a reset to 5
    values[55:] = values[55:] - values[54] + 2  # and another, to 2
    series = {"c": values}
    times = np.arange(len(values)) * 15.0
    exprs, ours = [], {}
    for t, window in ((300, 120), (465, 300), (600, 60), (30, 120), (840, 600), (1005, 45), (1185, 180)):
        inside = [(ts, v) for ts, v in zip(times, values, strict=True) if t - window <= ts <= t]
        for fn, per_second in (("rate", True), ("increase", False)):
            expr = f"{fn}(c[{window}s])"
            exprs.append((expr, t))
            ours[f"{expr}@{t}"] = promql.extrapolated_delta(inside, t - window, t, per_second=per_second)
    got = {}
    for expr, t in exprs:  # one evaluation time per file: the runner reports by expression
        got[f"{expr}@{t}"] = promtool_eval(tmp_path, series, [(expr, t)])[expr]
    for key, value in ours.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key


def test_edge_cases():
    assert math.isnan(promql.histogram_quantile(0.5, [(1.0, 3)]))  # no +Inf bucket
    assert math.isnan(promql.histogram_quantile(0.5, [(1.0, 0), (math.inf, 0)]))  # no observations
    assert promql.histogram_quantile(-0.1, [(1.0, 1), (math.inf, 1)]) == -math.inf
    assert promql.histogram_quantile(1.5, [(1.0, 1), (math.inf, 1)]) == math.inf
    assert promql.histogram_quantile(0.99, [(1.0, 1), (2.0, 1), (math.inf, 5)]) == 2.0  # rank in +Inf
    assert math.isnan(promql.extrapolated_delta([(0.0, 1.0)], 0, 60))


def test_burn_rate_alerts():
    assert promql.burn_rate(0.01, 0.99) == pytest.approx(1.0)
    ratios = {"5m": 0.2, "1h": 0.16, "30m": 0.0, "6h": 0.07, "3d": 0.02, "2h": 0.0}
    assert promql.burn_alerts(ratios, 0.99) == ["page 1h/5m", "ticket 3d/6h"]
    assert promql.burn_alerts({k: 0.005 for k in ratios}, 0.99) == []


def _families(registry) -> dict[str, list]:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_exporter_normalizes_triton_and_a_live_llmlab_server(tiny_model):
    """Triton's documented exposition (a loopback stand-in: Triton cannot run here) and llmlab's real inference
    service (vLLM's names), scraped by one exporter; a dead target reads up 0 and breaks nothing."""
    import openai
    from prometheus_client import CollectorRegistry

    from llmlab.monitoring import triton
    from llmlab.monitoring.exporter import InferenceExporter, Target
    from tests.conftest import serve_inference

    tm = triton.TritonMetrics(["resnet50", "bert"])
    for i in range(10):
        tm.record("resnet50", duration_us=1000 + 100 * i, queue_us=50, success=i != 3, batch=2)
    tm.record("bert", duration_us=5000, queue_us=2000)
    server = triton.serve(tm)
    proc, base = serve_inference(tiny_model, "--served-model-name", "tiny")
    try:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="none")
        for _ in range(3):
            client.completions.create(model="tiny", prompt="to be", max_tokens=5, temperature=0)
        registry = CollectorRegistry()
        registry.register(InferenceExporter([
            Target("triton", f"http://127.0.0.1:{server.server_address[1]}/metrics", "triton"),
            Target("vllm", f"{base}/metrics", "llmlab"), Target("vllm", "http://127.0.0.1:9/metrics", "dead")]))
        fam = _families(registry)
    finally:
        proc.terminate()
        proc.wait(30)
        server.shutdown()

    def value(name, **labels):
        hits = [v for lab, v in fam.get(name, []) if all(lab.get(k) == w for k, w in labels.items())]
        assert len(hits) == 1, (name, labels, fam.get(name))
        return hits[0]

    assert value("llmlab_inference_up", target="triton") == 1 and value("llmlab_inference_up", target="dead") == 0
    assert value("llmlab_inference_requests_total", backend="triton", model="resnet50", outcome="success") == 9
    assert value("llmlab_inference_requests_total", backend="triton", model="resnet50", outcome="failure") == 1
    assert value("llmlab_inference_request_seconds_total", model="resnet50") == pytest.approx(14500e-6)
    assert value("llmlab_inference_queue_seconds_total", model="bert") == pytest.approx(2000e-6)
    assert value("llmlab_inference_request_latency_quantile_seconds", model="bert", quantile="0.95") == \
        pytest.approx(5000e-6)
    assert value("llmlab_inference_request_latency_seconds_count", model="resnet50") == 9
    assert value("llmlab_inference_requests_total", backend="vllm", model="tiny", outcome="success") == 3
    assert value("llmlab_inference_generation_tokens_total", backend="vllm", model="tiny") == 15
    assert value("llmlab_inference_request_duration_seconds_count", model="tiny") == 3
    assert value("llmlab_inference_request_duration_seconds_bucket", model="tiny", le="+Inf") == 3


def test_drift_statistics_against_scipy_and_numpy():
    import scipy.stats

    from llmlab.monitoring import drift

    rng = np.random.default_rng(0)
    ref, same, shifted = rng.gamma(2.0, 1.0, 4000), rng.gamma(2.0, 1.0, 1500), rng.gamma(2.6, 1.1, 1500)
    for cur in (same, shifted):
        assert drift.ks_statistic(ref, cur) == pytest.approx(scipy.stats.ks_2samp(ref, cur).statistic, abs=1e-12)
        edges = np.quantile(ref, np.linspace(0, 1, 11))
        edges[0], edges[-1] = -np.inf, np.inf
        r = np.maximum(np.histogram(ref, edges)[0] / len(ref), 1e-4)
        c = np.maximum(np.histogram(cur, edges)[0] / len(cur), 1e-4)
        assert drift.psi(ref, cur) == pytest.approx(float(np.sum((c - r) * np.log(c / r))), rel=1e-9)
    assert drift.psi(ref, same) < 0.05 < 0.25 < drift.psi(ref, shifted)


def test_token_nll_is_cross_entropy_and_the_monitor_exports_gauges(tiny_model):
    import torch
    from prometheus_client import CollectorRegistry

    from llmlab import hf
    from llmlab.monitoring import drift
    from llmlab.tokenization import CharTokenizer
    from tests.conftest import TEXT

    model, tok = hf.load(tiny_model), CharTokenizer.train(TEXT)  # the fixture's model and its tokenizer
    texts = ["the quick brown fox", "lazy dog!", "x"]
    nll = drift.token_nll(model, tok, texts)
    want = torch.cat([torch.nn.functional.cross_entropy(model(torch.tensor([tok.encode(t)]))[0, :-1].double(),
                                                        torch.tensor(tok.encode(t)[1:]), reduction="none")
                      for t in texts[:2]])
    assert nll.shape == (len(texts[0]) + len(texts[1]) - 2,) and np.allclose(nll, want.detach().numpy(), atol=1e-10)
    monitor = drift.DriftMonitor(np.random.default_rng(0).normal(3, 1, 1000), "tiny", window=300, min_tokens=100)
    registry = CollectorRegistry()
    registry.register(monitor)
    assert math.isnan(registry.get_sample_value("llmlab_drift_psi", {"model": "tiny"}))
    monitor.observe(np.random.default_rng(1).normal(3, 1, 500))
    assert registry.get_sample_value("llmlab_drift_window_tokens", {"model": "tiny"}) == 300
    calm = registry.get_sample_value("llmlab_drift_psi", {"model": "tiny"})
    monitor.observe(np.random.default_rng(2).normal(4.5, 1, 300))
    assert calm < 0.1 < 1 < registry.get_sample_value("llmlab_drift_psi", {"model": "tiny"})
    assert registry.get_sample_value("llmlab_drift_ks", {"model": "tiny"}) > 0.4


def test_drift_alert_fires_after_its_hold_and_not_before(tmp_path):
    from llmlab.monitoring import drift

    needs(shutil.which("promtool") is not None, "promtool (Debian package prometheus) is not installed")
    rules = Path(__file__).resolve().parents[1] / "dashboards" / "rules" / "drift.rules.yaml"
    assert yaml.safe_load(rules.read_text()) == drift.alert_rules()
    description = drift.alert_rules()["groups"][0]["rules"][0]["annotations"]["description"]
    fired = {"exp_labels": {"severity": "ticket", "model": "m", "alertname": "LLMLabPerplexityDrift"},
             "exp_annotations": {"summary": "Served text of m drifted from the reference (PSI 0.40)",
                                 "description": description}}
    doc = {"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [{"series": 'llmlab_drift_psi{model="m"}', "values": "0.05x10 0.4x10"},
                         {"series": 'llmlab_drift_psi{model="calm"}', "values": "0.05x20"}],
        "alert_rule_test": [{"eval_time": "14m", "alertname": "LLMLabPerplexityDrift", "exp_alerts": []},
                            {"eval_time": "17m", "alertname": "LLMLabPerplexityDrift", "exp_alerts": [fired]}]}]}
    (tmp_path / "drift_test.yaml").write_text(yaml.safe_dump(doc))
    out = subprocess.run(["promtool", "test", "rules", str(tmp_path / "drift_test.yaml")], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
