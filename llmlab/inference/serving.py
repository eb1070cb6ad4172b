"""Serving the engine: one background thread runs :meth:`Engine.step` while requests arrive from many
async handlers, with a bounded queue (backpressure), token streaming back to the handlers, and Prometheus
metrics under vLLM's names and meanings, so one inference dashboard serves both engines.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from llmlab.inference.engine import Engine, Request, SamplingParams
from llmlab.inference.metrics import VLLMMetrics

log = logging.getLogger(__name__)


class Overloaded(RuntimeError):
    """The waiting queue is full: answer 429 with Retry-After."""


@dataclass
class _Stream:
    request: Request
    queue: asyncio.Queue
    loop: asyncio.AbstractEventLoop
    tokens: bool = True  # deliver tokens as they come (streaming), or only the finished request
    sent: int = 0


class AsyncEngine:
    """Thread-safe front of an :class:`Engine`: ``submit`` from any event loop, ``stream`` the tokens."""

    def __init__(self, engine: Engine, registry: CollectorRegistry | None = None, max_waiting: int = 32,
                 on_fatal=None):
        self.engine, self.max_waiting = engine, max_waiting
        self.on_fatal = on_fatal  # called (on the engine thread) if the loop itself dies: the server exits
        self._aborts: set[str] = set()
        self.registry = registry or CollectorRegistry()
        self.metrics = VLLMMetrics(self.registry, engine.name)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._streams: dict[str, _Stream] = {}
        self._incoming: list[_Stream] = []
        self._seen = dict.fromkeys(("prompt", "generation", "drafts", "draft_tokens", "accepted"), 0)
        self._thread = threading.Thread(target=self._loop, name="engine", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> AsyncEngine:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.error is None

    def submit(self, prompt_ids: list[int], params: SamplingParams, stream: bool = True) -> _Stream:
        """Queue a request; raises Overloaded when ``max_waiting`` requests are already waiting, ValueError
        for a bad request. With ``stream=False`` the handler is woken once, when the request finishes."""
        request = self.engine.new_request(prompt_ids, params)  # no engine state touched: safe off-thread
        with self._lock:
            if len(self._incoming) + len(self.engine.waiting) >= self.max_waiting:
                raise Overloaded(f"{self.max_waiting} requests are waiting; retry shortly")
            stream = _Stream(request, asyncio.Queue(), asyncio.get_running_loop(), tokens=stream)
            self._incoming.append(stream)
        self._wake.set()
        return stream

    def abort(self, stream: _Stream) -> None:
        """Stop generating for a request whose client went away (finished as ``abort``)."""
        if not stream.request.finished:
            with self._lock:
                self._aborts.add(stream.request.id)
            self._wake.set()

    async def stream(self, stream: _Stream):
        """Yield (new token ids, request, final) as they are generated; ``final`` marks the last item, after
        which the engine no longer touches the request. (The request object is the engine thread's: while
        items are in flight its ``finished`` may already be set, and its text not yet final.)"""
        while True:
            item = await stream.queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if item[2]:
                return

    # --- the engine thread ----------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                with self._lock:
                    for s in self._incoming:
                        self.engine.waiting.append(s.request)
                        self._streams[s.request.id] = s
                    self._incoming.clear()
                    aborts, self._aborts = self._aborts, set()
                for req in self.engine.abort(aborts):
                    self._deliver(req, len(req.output_ids))
                if not self.engine.has_work():
                    self._wake.wait(0.5)
                    self._wake.clear()
                    self._observe()
                    continue
                before = {r.id: len(r.output_ids) for r in self.engine.running}
                try:
                    finished = self.engine.step()
                except Exception as e:  # noqa: BLE001 - this batch fails; the engine goes on serving
                    log.exception("an engine step failed; failing its batch")
                    self._fail(self.engine.abort({r.id for r in self.engine.running}), e)
                    continue
                for req in [*self.engine.running, *finished]:
                    self._deliver(req, before.get(req.id))
                self._observe()
        except BaseException as e:  # the loop itself died: fail every open stream, and let the server exit
            self.error = e
            log.exception("the engine loop died")
            for s in self._streams.values():
                s.loop.call_soon_threadsafe(s.queue.put_nowait, RuntimeError(f"engine failed: {e}"))
            if self.on_fatal is not None:
                self.on_fatal()

    def _fail(self, requests: list[Request], error: Exception) -> None:
        for req in requests:
            s = self._streams.pop(req.id, None)
            if s is not None:
                s.loop.call_soon_threadsafe(s.queue.put_nowait, RuntimeError(f"the engine failed on this "
                                                                             f"request's batch: {error}"))
            self.metrics.success.labels(self.metrics.model_name, "abort").inc()

    def _deliver(self, req: Request, before: int | None) -> None:
        s = self._streams.get(req.id)
        if s is None:
            return
        new = req.output_ids[s.sent:]
        if new or req.finished:
            if s.tokens or req.finished:
                s.sent = len(req.output_ids)
                s.loop.call_soon_threadsafe(s.queue.put_nowait, (new, req, req.finished))
            if before is None:  # its first tokens: time to first token
                self.metrics.ttft.labels(self.metrics.model_name).observe(req.first_token_at - req.arrival)
            else:
                times = req.token_times[before:]
                prev = req.token_times[before - 1] if before else req.first_token_at
                for t in times:
                    self.metrics.itl.labels(self.metrics.model_name).observe(max(t - prev, 0.0))
                    prev = t
        if req.finished:
            self._streams.pop(req.id, None)
            self.metrics.e2e.labels(self.metrics.model_name).observe(time.perf_counter() - req.arrival)
            self.metrics.success.labels(self.metrics.model_name, req.finish_reason).inc()

    def _observe(self) -> None:
        m, e, name = self.metrics, self.engine, self.metrics.model_name
        m.running.labels(name).set(len(e.running))
        m.waiting.labels(name).set(len(e.waiting) + len(self._incoming))
        m.kv_usage.labels(name).set(e.cache.usage())
        now = {"prompt": e.prompt_tokens, "generation": e.generation_tokens, "drafts": e.spec.drafts,
               "draft_tokens": e.spec.draft_tokens, "accepted": e.spec.accepted_tokens}
        for key, counter in (("prompt", m.prompt_tokens), ("generation", m.generation_tokens), ("drafts", m.drafts),
                             ("draft_tokens", m.draft_tokens), ("accepted", m.accepted)):
            counter.labels(name).inc(now[key] - self._seen[key])  # the engine counts; export the increase
        self._seen = now
