"""Load test of the inference service (llmlab's engine or vLLM: the same OpenAI API), gated by
loadtests/slos.yaml.

    locust -f loadtests/inference_locustfile.py --headless -u 4 -r 4 -t 30s --host http://127.0.0.1:8001

Each simulated user streams chat completions. Locust records the whole request as
``POST /v1/chat/completions``; the time to the first streamed chunk with content is recorded as a custom
event ``TTFT /v1/chat/completions``, the entry the SLO gate holds to the TTFT objective. A 429 (the bounded
queue shedding load, with Retry-After) is the service working as designed and not counted as a failure;
anything else that is not a complete stream ending in ``[DONE]`` is. Prompts are short passages of Tiny
Shakespeare, or the lines of the file LLMLAB_LOADTEST_PROMPTS (one prompt a line); LLMLAB_LOADTEST_MAX_TOKENS
sets the completion length (default 32). LLMLAB_API_KEY is sent when set. Loopback only.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

from locust import HttpUser, between, events, task

from llmlab.platform import slo

MAX_TOKENS = int(os.environ.get("LLMLAB_LOADTEST_MAX_TOKENS", "32"))


def _prompts() -> list[str]:
    path = os.environ.get("LLMLAB_LOADTEST_PROMPTS")
    if path:
        return [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    from llmlab.data import shakespeare

    text = shakespeare.split()[1]
    return [text[i: i + 200] for i in range(0, min(len(text), 200 * 200), 200)]


PROMPTS = _prompts()


class ChatUser(HttpUser):
    wait_time = between(0.5, 1.5)

    def on_start(self):
        key = os.environ.get("LLMLAB_API_KEY")
        if key:
            self.client.headers["Authorization"] = f"Bearer {key}"
        self.model = self.client.get("/v1/models", name="/v1/models").json()["data"][0]["id"]

    @task
    def chat(self):
        body = {"model": self.model, "messages": [{"role": "user", "content": random.choice(PROMPTS)}],
                "max_tokens": MAX_TOKENS, "temperature": 0.8, "stream": True}
        start = time.perf_counter()
        with self.client.post("/v1/chat/completions", json=body, stream=True, catch_response=True,
                              name="/v1/chat/completions") as r:
            if r.status_code == 429:
                r.success()
                return
            if r.status_code != 200:
                r.failure(f"status {r.status_code}")
                return
            first, done = None, False
            for line in r.iter_lines():
                if not line.startswith(b"data: "):
                    continue
                data = line[len(b"data: "):]
                if data == b"[DONE]":
                    done = True
                    break
                delta = json.loads(data)["choices"][0]["delta"] if first is None else None
                if first is None and delta and delta.get("content"):
                    first = time.perf_counter() - start
                    events.request.fire(request_type="TTFT", name="/v1/chat/completions", response_time=first * 1000,
                                        response_length=0, exception=None, context={})
            if not done:
                r.failure("the stream ended without [DONE]")


slo.gate_locust_run(events, "inference")
