"""Triton Inference Server's metrics endpoint as its documentation specifies it (user_guide/metrics.md: the
per-model request counters, the cumulative durations in microseconds, the optional latency summaries), served
on loopback. Triton itself cannot run here (it needs its container and, for most backends, a GPU): this
stands in for its ``:8002/metrics`` so the exporter is tested against the documented format."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

COUNTERS = (  # (name, help) as Triton documents them
    ("nv_inference_request_success", "Number of successful inference requests, all batch sizes"),
    ("nv_inference_request_failure", "Number of failed inference requests, all batch sizes"),
    ("nv_inference_count", "Number of inferences performed (does not include cached requests)"),
    ("nv_inference_exec_count", "Number of model executions performed (does not include cached requests)"),
    ("nv_inference_request_duration_us", "Cumulative inference request duration in microseconds "
                                         "(includes cached requests)"),
    ("nv_inference_queue_duration_us", "Cumulative inference queuing duration in microseconds "
                                       "(includes cached requests)"),
    ("nv_inference_compute_infer_duration_us", "Cumulative compute inference duration in microseconds "
                                               "(does not include cached requests)"),
)
QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)  # Triton's default summary quantiles


class TritonMetrics:
    """Per-model counters that requests advance (``record``), written in Triton's exposition format; with
    ``summaries`` the request-duration summary too (quantiles over every recorded request)."""

    def __init__(self, models: list[str], version: str = "1", summaries: bool = True):
        self.version, self.summaries = version, summaries
        self.values = {m: dict.fromkeys([n for n, _ in COUNTERS], 0.0) for m in models}
        self.durations: dict[str, list[float]] = {m: [] for m in models}
        self.lock = threading.Lock()

    def record(self, model: str, duration_us: float, queue_us: float, success: bool = True, batch: int = 1):
        with self.lock:
            v = self.values[model]
            v["nv_inference_request_success" if success else "nv_inference_request_failure"] += 1
            v["nv_inference_request_duration_us"] += duration_us
            v["nv_inference_queue_duration_us"] += queue_us
            if success:
                v["nv_inference_count"] += batch
                v["nv_inference_exec_count"] += 1
                v["nv_inference_compute_infer_duration_us"] += duration_us - queue_us
                self.durations[model].append(duration_us)

    def render(self) -> str:
        lines = []
        with self.lock:
            for name, help_text in COUNTERS:
                lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
                lines += [f'{name}{{model="{m}",version="{self.version}"}} {v[name]:.0f}'
                          for m, v in self.values.items()]
            if self.summaries:
                name = "nv_inference_request_summary_us"
                lines += [f"# HELP {name} Summary of inference request duration in microseconds "
                          "(includes cached requests)", f"# TYPE {name} summary"]
                for m, d in self.durations.items():
                    labels = f'model="{m}",version="{self.version}"'
                    lines.append(f"{name}_count{{{labels}}} {len(d)}")
                    lines.append(f"{name}_sum{{{labels}}} {sum(d):.0f}")
                    for q in QUANTILES:
                        value = f"{float(np.quantile(d, q)):.0f}" if d else "NaN"
                        lines.append(f'{name}{{{labels},quantile="{q}"}} {value}')
        return "\n".join(lines) + "\n"


def serve(metrics: TritonMetrics, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """``metrics`` at http://host:port/metrics in a daemon thread; ``server.server_address`` has the port,
    ``server.shutdown()`` stops it."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            if self.path != "/metrics":
                self.send_error(404)
                return
            body = metrics.render().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
