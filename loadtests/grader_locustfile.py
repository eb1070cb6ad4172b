"""Load test of the grading service: submit, poll and read the gradebook, gated by loadtests/slos.yaml.

    locust -f loadtests/grader_locustfile.py --headless -u 5 -r 5 -t 30s --host http://127.0.0.1:8000

Tokens come from LLMLAB_LOADTEST_TOKENS (comma-separated, one learner per simulated user, so the per-learner
rate limit is not what gets measured). When the run ends, the `quitting` listener compares each endpoint's
p95 and the failure ratio with the SLO file (LLMLAB_SLO_FILE, default loadtests/slos.yaml) and sets a
non-zero exit code on any miss. Send traffic to loopback only.
"""

from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path

from locust import HttpUser, between, events, task

from llmlab import slo
from llmlab.labs import get_lab

log = logging.getLogger("llmlab.loadtest")
SUBMISSION = get_lab("m01").submission_source().encode()
_tokens = itertools.cycle([t for t in os.environ.get("LLMLAB_LOADTEST_TOKENS", "").split(",") if t])


class Learner(HttpUser):
    wait_time = between(1, 2)

    def on_start(self):
        token = next(_tokens, None)
        if token is None:
            raise RuntimeError("set LLMLAB_LOADTEST_TOKENS (see loadtests/run.py)")
        self.client.headers["Authorization"] = f"Bearer {token}"
        self.submissions: list[str] = []

    @task(1)
    def submit(self):
        with self.client.post("/v1/submissions", data={"lab": "m01"}, files={"file": ("m01.py", SUBMISSION)},
                              name="/v1/submissions", catch_response=True) as r:
            if r.status_code == 202:
                self.submissions.append(r.json()["id"])
                r.success()
            elif r.status_code == 429:  # the per-learner limit working as designed is not a failure
                r.success()
            else:
                r.failure(f"status {r.status_code}")

    @task(5)
    def poll(self):
        if self.submissions:
            self.client.get(f"/v1/submissions/{self.submissions[-1]}", name="/v1/submissions/{submission_id}")

    @task(2)
    def gradebook(self):
        self.client.get("/v1/gradebook", name="/v1/gradebook")


@events.quitting.add_listener
def enforce_slos(environment, **_kw):
    gate = slo.locust_gate("grader", slo.load(Path(os.environ.get("LLMLAB_SLO_FILE", slo.SLO_FILE))))
    misses = []
    stats = environment.stats
    for endpoint, limit in gate["p95_seconds"].items():
        method, name = endpoint.split(" ", 1)
        entry = stats.get(name, method)
        if entry.num_requests == 0:
            misses.append(f"{endpoint}: no requests")
            continue
        p95 = entry.get_response_time_percentile(0.95) / 1000
        log.info("SLO %s: p95 %.3fs (limit %.3fs) over %d requests", endpoint, p95, limit, entry.num_requests)
        if p95 > limit:
            misses.append(f"{endpoint}: p95 {p95:.3f}s > {limit:g}s")
    ratio = stats.total.fail_ratio
    if ratio > gate["max_failure_ratio"]:
        misses.append(f"failure ratio {ratio:.2%} > {gate['max_failure_ratio']:.2%}")
    if misses:
        log.error("SLO gate failed: %s", "; ".join(misses))
        environment.process_exit_code = 1
    else:
        log.info("SLO gate passed (failure ratio %.2f%%)", 100 * ratio)
