"""Load test of the grading service: submit, poll and read the gradebook, gated by loadtests/slos.yaml.

    locust -f loadtests/grader_locustfile.py --headless -u 5 -r 5 -t 30s --host http://127.0.0.1:8000

Tokens come from LLMLAB_LOADTEST_TOKENS (comma-separated, one learner per simulated user, so the per-learner
rate limit is not what gets measured). When the run ends, the `quitting` listener compares each endpoint's
p95 and the failure ratio with the SLO file (LLMLAB_SLO_FILE, default loadtests/slos.yaml) and sets a
non-zero exit code on any miss. Send traffic to loopback only.
"""

from __future__ import annotations

import itertools
import os

from locust import HttpUser, between, events, task

from llmlab.labs import get_lab
from llmlab.platform import slo

SUBMISSION = get_lab("m01").standalone_source().encode()  # as a learner hands it in
_tokens = itertools.cycle([t for t in os.environ.get("LLMLAB_LOADTEST_TOKENS", "").split(",") if t])


class Learner(HttpUser):
    wait_time = between(1, 2)

    def on_start(self):
        token = next(_tokens, None)
        if token is None:
            raise RuntimeError("set LLMLAB_LOADTEST_TOKENS (see loadtests/run.py)")
        self.client.headers["Authorization"] = f"Bearer {token}"
        self.submissions: list[str] = []
        # a learner comes to hand something in, looks at it and at their grades: every user calls each route at
        # least once, so no route's SLO is left without requests by chance (a 12 s run of 3 users once made 17
        # random requests and none to the gradebook: the gate rightly failed, the test did not test the gate)
        self.submit()
        self.poll()
        self.gradebook()

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


slo.gate_locust_run(events, "grader")
