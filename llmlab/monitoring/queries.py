"""The PromQL of the monitoring dashboard, defined once: Grafana's dashboard (llmlab.platform.dashboards)
draws these panels (and the inference SLOs' burn rates from loadtests/slos.yaml) and lab m19's live
demonstration evaluates the same expressions on its Prometheus.
``$__rate_interval`` is Grafana's; ``concrete`` gives it a value Prometheus accepts."""

from __future__ import annotations

RATE = "$__rate_interval"
BY = "backend, model"

PANELS: dict[str, list[tuple[str, str]]] = {  # title -> [(expr, legend)]
    "Tokens per second": [
        (f"sum by ({BY}) (rate(llmlab_inference_generation_tokens_total[{RATE}]))", "{{backend}} {{model}}")],
    "Requests per second by outcome": [
        (f"sum by ({BY}, outcome) (rate(llmlab_inference_requests_total[{RATE}]))",
         "{{backend}} {{model}} {{outcome}}")],
    "End-to-end latency p95": [
        (f"histogram_quantile(0.95, sum by (le, {BY}) (rate(llmlab_inference_request_duration_seconds_bucket"
         f"[{RATE}])))", "{{backend}} {{model}} (histogram)"),
        ('max by (backend, model) (llmlab_inference_request_latency_quantile_seconds{quantile="0.95"})',
         "{{backend}} {{model}} (Triton's summary)")],
    "Mean queue time per request": [
        (f"sum by ({BY}) (rate(llmlab_inference_queue_seconds_total[{RATE}])) / "
         f"sum by ({BY}) (rate(llmlab_inference_requests_total[{RATE}]))", "{{backend}} {{model}}")],
    "Error ratio": [
        (f'sum by ({BY}) (rate(llmlab_inference_requests_total{{outcome="failure"}}[{RATE}])) / '
         f"sum by ({BY}) (rate(llmlab_inference_requests_total[{RATE}]))", "{{backend}} {{model}}")],
    "Perplexity drift (PSI and KS of per-token NLL)": [
        ("max by (model) (llmlab_drift_psi)", "PSI {{model}}"), ("max by (model) (llmlab_drift_ks)", "KS {{model}}")],
    "Mean per-token NLL of served text": [("max by (model) (llmlab_drift_mean_nll)", "{{model}}")],
    "Targets up": [("min by (backend, target) (llmlab_inference_up)", "{{backend}} {{target}}")],
}
def concrete(expr: str, rate_interval: str = "1m") -> str:
    return expr.replace(RATE, rate_interval)
