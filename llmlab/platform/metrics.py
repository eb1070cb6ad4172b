"""Prometheus metric names and the metrics themselves: services export them, dashboards and alert rules
query the same names (see ``dashboards/``). The grading and retrieval services' are defined here, the inference
engine's (vLLM's names) in ``llmlab.inference.metrics``, and the RLHF job's (lab m13's KL tracker) at the end. Units
in names; label values bounded (lab ids, fixed outcome and reason sets, one run per RLHF job)."""

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
SEARCH_DURATION = "llmlab_retrieval_search_seconds"
SEARCH_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
DOCUMENTS = "llmlab_retrieval_documents"
RECALL_CANARY = "llmlab_retrieval_recall_canary"
REJECTED = "llmlab_retrieval_rejected_total"

BUCKETS = {HTTP_DURATION: HTTP_BUCKETS, GRADING_DURATION: GRADING_BUCKETS, TTFT: TTFT_BUCKETS, ITL: ITL_BUCKETS,
           E2E: E2E_BUCKETS, SEARCH_DURATION: SEARCH_BUCKETS}

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


class RetrievalMetrics:
    """The retrieval service's metrics on ``registry``: HTTP latency under the grader's name and labels (one
    SLO machinery for both), FAISS search time by index kind, live documents, the recall canary, 429s."""

    def __init__(self, registry, index: str, store: bool = True):
        self.http_duration = Histogram(HTTP_DURATION, "HTTP request latency", ["method", "route", "status"],
                                       buckets=HTTP_BUCKETS, registry=registry)
        if store:  # a router holds no index: its shards export these (a router's never-set gauges would read 0)
            self.search = Histogram(SEARCH_DURATION, "FAISS search time per request, by index", ["index"],
                                    buckets=SEARCH_BUCKETS, registry=registry).labels(index)
            self.documents = Gauge(DOCUMENTS, "Live documents in the index", registry=registry)
            self.recall = Gauge(RECALL_CANARY, "Recall@10 of the index against exact search, stored vectors "
                                "sampled as queries", registry=registry)
        self.rejected = Counter(REJECTED.removesuffix("_total"), "Requests refused with 429 (overload)",
                                registry=registry)


# lab m13's KL tracker: one gauge per PPO statistic, set after every iteration, labelled by run
RLHF = {"reward": "llmlab_rlhf_reward", "gold_train": "llmlab_rlhf_gold", "kl": "llmlab_rlhf_kl_nats",
        "kl_coef": "llmlab_rlhf_kl_coef", "entropy": "llmlab_rlhf_entropy_nats",
        "clip_fraction": "llmlab_rlhf_clip_fraction", "value_loss": "llmlab_rlhf_value_loss",
        "iteration": "llmlab_rlhf_iteration"}
RLHF_KL_TARGET = "llmlab_rlhf_kl_target_nats"


class RLHFMetrics:
    """The KL tracker's gauges for one run, on ``registry``; ``observe(row)`` takes a PPO history row."""

    def __init__(self, registry, run: str, kl_target: float):
        self.run = run
        self.gauges = {key: Gauge(name, f"PPO {key.replace('_', ' ')} after the latest iteration", ["run"],
                                  registry=registry) for key, name in RLHF.items()}
        Gauge(RLHF_KL_TARGET, "The adaptive KL controller's target", ["run"], registry=registry).labels(run).set(
            kl_target)

    def observe(self, row: dict) -> None:
        for key, gauge in self.gauges.items():
            gauge.labels(self.run).set(row[key])
