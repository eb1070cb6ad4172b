"""A Prometheus exporter that scrapes inference servers and exports one normalized set of metrics, by backend
and model: Triton Inference Server (its ``nv_inference_*`` per-model counters, in microseconds, and the
optional ``*_summary_us`` summaries), vLLM and llmlab's engine (vLLM's ``vllm:*`` names). A custom collector
(prometheus_client): every scrape of the exporter scrapes the targets, so its values are never staler than
the request for them.

Exported (counters keep their sources' resets; rates and quantiles are PromQL's job):
  llmlab_inference_up{backend,target}                         1 when the last scrape answered
  llmlab_inference_requests_total{backend,model,outcome}      success | failure
  llmlab_inference_generation_tokens_total{backend,model}     vLLM/llmlab (Triton's core metrics have no tokens)
  llmlab_inference_queue_seconds_total{backend,model}         time requests waited to be scheduled
  llmlab_inference_request_seconds_total{backend,model}       end-to-end time of finished requests
  llmlab_inference_request_duration_seconds{backend,model}    histogram (vLLM/llmlab buckets)
  llmlab_inference_request_latency_seconds{backend,model}     summary (Triton: count and sum)
  llmlab_inference_request_latency_quantile_seconds{backend,model,quantile}  Triton's quantiles (when enabled)
  llmlab_inference_requests_waiting{backend,model}            gauge
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import httpx
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, SummaryMetricFamily
from prometheus_client.parser import text_string_to_metric_families

BACKENDS = ("triton", "vllm")  # llmlab's engine is "vllm": it exports vLLM's names


@dataclass(frozen=True)
class Target:
    backend: str
    url: str  # the /metrics URL
    name: str = ""  # a label for llmlab_inference_up (default: the URL)

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {self.backend!r}")


def samples(text: str) -> list[tuple[str, dict, float]]:
    """(name, labels, value) of every sample in a text exposition; a counter's samples by its family's name
    (the parser adds "_total" to Triton's counters, which have none, and keeps vLLM's)."""
    return [(fam.name if fam.type == "counter" and s.name == f"{fam.name}_total" else s.name, s.labels, s.value)
            for fam in text_string_to_metric_families(text) for s in fam.samples]


def _by_model(rows, name: str, label: str, scale: float = 1.0) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for n, labels, value in rows:
        if n == name and label in labels:
            out[labels[label]] += value * scale
    return dict(out)


class Normalized:
    """The normalized values of one scrape, per model: counters, histogram buckets, summary quantiles."""

    def __init__(self):
        self.counters: dict[str, dict[str, float]] = defaultdict(dict)  # metric -> {model: value}
        self.outcomes: dict[tuple[str, str], float] = {}  # (model, outcome) -> requests
        self.gauges: dict[str, dict[str, float]] = defaultdict(dict)
        self.histograms: dict[str, tuple[list[tuple[str, float]], float]] = {}  # model -> (buckets, sum)
        self.summaries: dict[str, tuple[float, float, dict[str, float]]] = {}  # model -> (count, sum, quantiles)


def normalize_triton(rows) -> Normalized:
    out = Normalized()
    for outcome, name in (("success", "nv_inference_request_success"), ("failure", "nv_inference_request_failure")):
        for model, v in _by_model(rows, name, "model").items():
            out.outcomes[(model, outcome)] = v
    out.counters["queue_seconds"] = _by_model(rows, "nv_inference_queue_duration_us", "model", 1e-6)
    out.counters["request_seconds"] = _by_model(rows, "nv_inference_request_duration_us", "model", 1e-6)
    out.gauges["requests_waiting"] = _by_model(rows, "nv_inference_pending_request_count", "model")
    count = _by_model(rows, "nv_inference_request_summary_us_count", "model")
    total = _by_model(rows, "nv_inference_request_summary_us_sum", "model", 1e-6)
    for model in count:
        quantiles = {labels["quantile"]: v * 1e-6 for n, labels, v in rows
                     if n == "nv_inference_request_summary_us" and labels.get("model") == model}
        out.summaries[model] = (count[model], total.get(model, 0.0), quantiles)
    return out


def normalize_vllm(rows) -> Normalized:
    out = Normalized()
    for model, v in _by_model(rows, "vllm:request_success", "model_name").items():
        out.outcomes[(model, "success")] = v
    models = {labels["model_name"] for _, labels, _ in rows if "model_name" in labels}
    errors = sum(v for n, labels, v in rows if n == "http_requests" and labels.get("status", "").startswith("5"))
    if len(models) == 1:  # the server's HTTP errors, when it serves one model (vLLM's counter has no model)
        out.outcomes[(next(iter(models)), "failure")] = errors
    out.counters["generation_tokens"] = _by_model(rows, "vllm:generation_tokens", "model_name")
    out.counters["queue_seconds"] = _by_model(rows, "vllm:request_queue_time_seconds_sum", "model_name")
    out.counters["request_seconds"] = _by_model(rows, "vllm:e2e_request_latency_seconds_sum", "model_name")
    out.gauges["requests_waiting"] = _by_model(rows, "vllm:num_requests_waiting", "model_name")
    for model in models:
        buckets = [(labels["le"], v) for n, labels, v in rows
                   if n == "vllm:e2e_request_latency_seconds_bucket" and labels.get("model_name") == model]
        if buckets:
            out.histograms[model] = (buckets, out.counters["request_seconds"].get(model, 0.0))
    return out


class InferenceExporter:
    """The collector: ``REGISTRY.register(InferenceExporter([Target("triton", url), ...]))``."""

    def __init__(self, targets: list[Target], timeout: float = 2.0):
        self.targets, self.timeout = targets, timeout

    def scrape(self) -> list[tuple[Target, Normalized | None]]:
        out = []
        with httpx.Client(timeout=self.timeout) as http:
            for t in self.targets:
                try:
                    r = http.get(t.url)
                    r.raise_for_status()
                    rows = samples(r.text)
                    out.append((t, normalize_triton(rows) if t.backend == "triton" else normalize_vllm(rows)))
                except (httpx.HTTPError, ValueError):
                    out.append((t, None))
        return out

    def collect(self):
        labels = ["backend", "model"]
        up = GaugeMetricFamily("llmlab_inference_up", "1 when the target's last scrape answered",
                               labels=["backend", "target"])
        requests = CounterMetricFamily("llmlab_inference_requests", "Finished requests by outcome",
                                       labels=[*labels, "outcome"])
        counters = {key: CounterMetricFamily(f"llmlab_inference_{key}", text, labels=labels) for key, text in (
            ("generation_tokens", "Generated tokens"), ("queue_seconds", "Time requests waited to be scheduled"),
            ("request_seconds", "End-to-end time of finished requests"))}
        waiting = GaugeMetricFamily("llmlab_inference_requests_waiting", "Requests waiting", labels=labels)
        hist = HistogramMetricFamily("llmlab_inference_request_duration_seconds", "End-to-end request latency",
                                     labels=labels)
        summary = SummaryMetricFamily("llmlab_inference_request_latency_seconds",
                                      "End-to-end request latency (Triton's counters)", labels=labels)
        # prometheus_client's SummaryMetricFamily carries count and sum only: Triton's quantiles as gauges
        quantile = GaugeMetricFamily("llmlab_inference_request_latency_quantile_seconds",
                                     "Triton's end-to-end latency quantiles", labels=[*labels, "quantile"])
        for target, norm in self.scrape():
            up.add_metric([target.backend, target.name or target.url], 0.0 if norm is None else 1.0)
            if norm is None:
                continue
            b = target.backend
            for (model, outcome), v in norm.outcomes.items():
                requests.add_metric([b, model, outcome], v)
            for key, fam in counters.items():
                for model, v in norm.counters.get(key, {}).items():
                    fam.add_metric([b, model], v)
            for model, v in norm.gauges.get("requests_waiting", {}).items():
                waiting.add_metric([b, model], v)
            for model, (buckets, total) in norm.histograms.items():
                hist.add_metric([b, model], buckets, total)
            for model, (count, total, quantiles) in norm.summaries.items():
                summary.add_metric([b, model], count, total)
                for q, v in quantiles.items():
                    quantile.add_metric([b, model, q], v)
        yield from (up, requests, *counters.values(), waiting, hist, summary, quantile)
