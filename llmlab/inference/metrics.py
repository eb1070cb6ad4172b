"""The inference engine's Prometheus metric names: vLLM's, so that dashboards, alert rules and load tests
work unchanged on a vLLM deployment and on llmlab's engine. Defined here only."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# the inference service: vLLM's metric names (llmlab's engine exports the same), and HTTP requests counted as
# vLLM's server counts them (prometheus-fastapi-instrumentator: handler, method, status grouped as "2xx")
TTFT = "vllm:time_to_first_token_seconds"
ITL = "vllm:inter_token_latency_seconds"
E2E = "vllm:e2e_request_latency_seconds"
HTTP_REQUESTS = "http_requests_total"
# buckets containing the inference SLO thresholds (loadtests/slos.yaml); vLLM's own buckets contain them too
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
ITL_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
E2E_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)


class VLLMMetrics:
    """The subset of vLLM's metrics llmlab's engine reports, with vLLM's names, labels and meaning."""

    def __init__(self, registry: CollectorRegistry, model_name: str):
        label = ["model_name"]
        self.running = Gauge("vllm:num_requests_running", "Requests in the running batch", label, registry=registry)
        self.waiting = Gauge("vllm:num_requests_waiting", "Requests waiting to be scheduled", label, registry=registry)
        self.kv_usage = Gauge("vllm:kv_cache_usage_perc", "KV-cache usage (1 = full)", label, registry=registry)
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Prefill tokens processed", label, registry=registry)
        self.generation_tokens = Counter("vllm:generation_tokens", "Generated tokens", label, registry=registry)
        self.ttft = Histogram(TTFT, "Time to first token", label, buckets=TTFT_BUCKETS,
                              registry=registry)
        self.itl = Histogram(ITL, "Time between output tokens", label, buckets=ITL_BUCKETS,
                             registry=registry)
        self.e2e = Histogram(E2E, "Request latency from arrival to finish", label,
                             buckets=E2E_BUCKETS, registry=registry)
        self.success = Counter("vllm:request_success", "Finished requests", ["model_name", "finished_reason"],
                               registry=registry)
        self.drafts = Counter("vllm:spec_decode_num_drafts", "Speculative steps", label, registry=registry)
        self.draft_tokens = Counter("vllm:spec_decode_num_draft_tokens", "Proposed tokens", label, registry=registry)
        self.accepted = Counter("vllm:spec_decode_num_accepted_tokens", "Accepted proposed tokens", label,
                                registry=registry)
        self.model_name = model_name
        for c in (self.prompt_tokens, self.generation_tokens, self.drafts, self.draft_tokens, self.accepted):
            c.labels(model_name)  # exported as 0 from the start
        for reason in ("stop", "length", "abort"):
            self.success.labels(model_name, reason)
