"""Prometheus metric names and the metrics themselves: services export them, dashboards and alert rules
query the same names (see ``dashboards/``). The grading service's are defined here, the inference engine's
(vLLM's names) in ``llmlab.inference.metrics``. Units in names; label values bounded (lab ids, fixed
outcome and reason sets)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from llmlab.inference.metrics import E2E, E2E_BUCKETS, HTTP_REQUESTS, ITL, ITL_BUCKETS, TTFT, TTFT_BUCKETS  # noqa: F401

# buckets that contain the grading SLO thresholds (see loadtests/slos.yaml when it lands)
GRADING_BUCKETS = (1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

SUBMISSIONS_TOTAL = "llmlab_submissions_total"
GRADING_DURATION = "llmlab_grading_duration_seconds"
QUEUE_DEPTH = "llmlab_grading_queue_depth"
RAY_JOB_FAILURES = "llmlab_ray_job_failures_total"
HTTP_DURATION = "llmlab_http_request_duration_seconds"

BUCKETS = {HTTP_DURATION: HTTP_BUCKETS, GRADING_DURATION: GRADING_BUCKETS, TTFT: TTFT_BUCKETS, ITL: ITL_BUCKETS,
           E2E: E2E_BUCKETS}

OUTCOMES = ("accepted", "graded", "failed", "rejected")
FAILURE_REASONS = ("submit_error", "job_failed", "no_result", "job_stopped", "deadline_exceeded")


class GraderMetrics:
    """The grading service's metrics, registered on ``registry`` (one per app, so tests don't collide)."""

    def __init__(self, registry, labs: list[str] = ()):
        self.submissions = Counter(SUBMISSIONS_TOTAL, "Submissions by lab and outcome", ["lab", "outcome"],
                                   registry=registry)
        self.grading_duration = Histogram(GRADING_DURATION, "Time from accepted submission to grade",
                                          ["lab"], buckets=GRADING_BUCKETS, registry=registry)
        self.queue_depth = Gauge(QUEUE_DEPTH, "Submissions accepted and not yet graded", registry=registry)
        self.ray_job_failures = Counter(RAY_JOB_FAILURES, "Grading Ray jobs that failed, by reason", ["reason"],
                                        registry=registry)
        self.http_duration = Histogram(HTTP_DURATION, "HTTP request latency", ["method", "route", "status"],
                                       buckets=HTTP_BUCKETS, registry=registry)
        # export zeros from the start, so rates and dashboards show 0 rather than "no data"
        for reason in FAILURE_REASONS:
            self.ray_job_failures.labels(reason)
        for lab in labs:
            for outcome in OUTCOMES:
                self.submissions.labels(lab, outcome)
