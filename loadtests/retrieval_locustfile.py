"""Load test of the retrieval service, gated by loadtests/slos.yaml.

    locust -f loadtests/retrieval_locustfile.py --headless -u 4 -r 4 -t 30s --host http://127.0.0.1:8002

Each simulated user searches by question text (three in four requests) and embeds a question (one in four);
Locust's entries are ``POST /v1/search`` and ``POST /v1/embeddings``, the names the SLO gate holds to their
p95 objectives. A 429 (the in-flight bound shedding load, with Retry-After) is the service working as designed
and not a failure. Questions are SQuAD dev's, or the lines of LLMLAB_LOADTEST_PROMPTS. Loopback only.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from locust import HttpUser, between, events, task

from llmlab.platform import slo


def _questions() -> list[str]:
    path = os.environ.get("LLMLAB_LOADTEST_PROMPTS")
    if path:
        return [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    from llmlab.data import qa

    return [q["question"] for q in qa.squad()[:500]]


QUESTIONS = _questions()


class SearchUser(HttpUser):
    wait_time = between(0.2, 0.8)

    def _post(self, path: str, body: dict) -> None:
        with self.client.post(path, json=body, catch_response=True, name=path) as r:
            if r.status_code == 429:
                r.success()
            elif r.status_code != 200:
                r.failure(f"status {r.status_code}")

    @task(3)
    def search(self):
        self._post("/v1/search", {"query": random.choice(QUESTIONS), "k": 5})

    @task(1)
    def embed(self):
        self._post("/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": random.choice(QUESTIONS)})


slo.gate_locust_run(events, "retrieval")
