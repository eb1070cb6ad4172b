"""The inference service: an OpenAI-compatible API over llmlab's builtin engine (vLLM serves the same API
on GPU nodes: `llmlab serve inference --engine vllm` hands over to `vllm serve` with mapped arguments).

Thin: parsing, the OpenAI error envelope, SSE streaming and chat templates here; batching, sampling,
speculation and metrics in ``llmlab.inference``. Run: ``llmlab serve inference --model DIR``.
"""

# no "from __future__ import annotations": FastAPI resolves dependency annotations at runtime

import asyncio
import itertools
import json
import os
import signal
import time
import uuid
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from pydantic import BaseModel, Field

from llmlab import __version__
from llmlab.inference import Engine, SamplingParams, metrics
from llmlab.inference.serving import AsyncEngine, Overloaded
from llmlab.platform.asgi import APIError, BodyLimit, Observe, install_openai_errors, openai_envelope, openai_error
from llmlab.platform.logs import RequestLog
from services.inference.settings import InferenceSettings

DEFAULT_CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")

UNCOUNTED = ("/metrics", "/health", "/version")  # vLLM's server leaves these out of http_requests_total too


class _Sampling(BaseModel):
    model: str
    max_tokens: int | None = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int | None = Field(None, ge=1)
    min_p: float | None = Field(None, ge=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict | None = None
    n: int = Field(1, ge=1)
    user: str | None = None


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int]
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False


class ChatMessage(BaseModel):
    role: str
    content: str


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)


def create_app(settings: InferenceSettings, engine: Engine | None = None) -> FastAPI:
    if settings.engine != "builtin":
        raise ValueError("this app serves the builtin engine; for vLLM run `llmlab serve inference --engine vllm`")
    import torch

    engine = engine or Engine.from_folder(settings.model, settings.draft_model,
                                          dtype=getattr(torch, settings.dtype), device=settings.device,
                                          max_batch=settings.max_batch, ngram=settings.ngram,
                                          compile=settings.compile,
                                          spec_tokens=settings.spec_tokens if (settings.draft_model or settings.ngram)
                                          else 0)
    engine.name = settings.served_model_name or engine.name
    # if the engine loop itself ever dies, /health fails and the process exits for its supervisor to restart
    runner = AsyncEngine(engine, max_waiting=settings.max_waiting,
                         on_fatal=lambda: os.kill(os.getpid(), signal.SIGTERM))
    tok = engine.tokenizer
    template = _chat_template(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.warm_up()  # compiled graphs are built before the server takes requests (no-op when eager)
        runner.start()
        yield
        runner.stop()

    app = FastAPI(title="llmlab inference", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible completions and chat over llmlab's engine.")
    app.state.runner = runner
    app.add_middleware(BodyLimit, limit=2 * settings.max_prompt_bytes + 64 * 1024,
                       error_body=lambda status, message: openai_envelope(status, message))

    requests = Counter(metrics.HTTP_REQUESTS, "HTTP requests by handler, method and status class (as vLLM's server)",
                       ["handler", "method", "status"], registry=runner.registry)

    def count(method: str, route: str, status: int, seconds: float) -> None:
        if route not in UNCOUNTED:
            requests.labels(route if route != "unmatched" else "none", method, f"{status // 100}xx").inc()

    app.add_middleware(Observe, observe=count)
    app.add_middleware(RequestLog, service="inference")  # outermost: request ids and JSON access lines

    install_openai_errors(app)

    def auth(authorization: Annotated[str | None, Header()] = None) -> None:
        key = settings.api_key.get_secret_value() if settings.api_key else None
        if key and authorization != f"Bearer {key}":
            raise APIError(401, "invalid or missing API key", "authentication_error")

    def check_model(name: str) -> None:
        if name != engine.name:
            raise APIError(404, f"the model {name!r} does not exist; this server serves {engine.name!r}",
                           param="model")

    def params(body: _Sampling, logprobs: int | None) -> SamplingParams:
        if body.n != 1:
            raise APIError(400, "only n=1 is supported", param="n")
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        p = SamplingParams(max_tokens=body.max_tokens or 16, temperature=body.temperature,
                           top_p=body.top_p if body.top_p < 1 else None, top_k=body.top_k, min_p=body.min_p,
                           seed=body.seed, stop=stop, logprobs=logprobs)
        try:
            p.validate()
        except ValueError as e:
            raise APIError(400, str(e)) from None
        return p

    def limit_prompt(text: str, param: str) -> None:
        if len(text.encode("utf-8", "surrogatepass")) > settings.max_prompt_bytes:
            raise APIError(400, f"the {param} is over {settings.max_prompt_bytes} bytes", param=param)

    async def run(prompt_ids: list[int], sp: SamplingParams, stream: bool):
        try:
            return runner.submit(prompt_ids, sp, stream=stream)
        except Overloaded as e:
            raise APIError(429, str(e), "rate_limit_exceeded", headers={"Retry-After": "1"}) from None
        except ValueError as e:
            raise APIError(400, str(e)) from None

    @app.get("/v1/models", dependencies=[Depends(auth)])
    def models():
        return {"object": "list", "data": [{"id": engine.name, "object": "model", "created": int(time.time()),
                                            "owned_by": "llmlab", "max_model_len": engine.context}]}

    @app.post("/v1/completions", dependencies=[Depends(auth)])
    async def completions(body: CompletionRequest, request: Request):
        check_model(body.model)
        if isinstance(body.prompt, list) and body.prompt and isinstance(body.prompt[0], str):
            if len(body.prompt) != 1:
                raise APIError(400, "one prompt per request", param="prompt")
            body.prompt = body.prompt[0]
        if isinstance(body.prompt, str):
            limit_prompt(body.prompt, "prompt")
            prompt_ids = await run_in_threadpool(tok.encode, body.prompt)  # tokenizing is CPU work: off the loop
        else:
            prompt_ids = list(body.prompt)
        if body.echo and body.stream:
            raise APIError(400, "echo is not supported with stream", param="echo")
        stream = await run(prompt_ids, params(body, body.logprobs), body.stream)
        echoed = []  # with echo and logprobs: the prompt's own log-probabilities, as vLLM's server returns
        if body.echo and body.logprobs is not None:
            echoed = await run_in_threadpool(engine.prompt_logprobs, prompt_ids, body.logprobs)
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": rid, "object": "text_completion", "created": created, "model": engine.name}
        if body.stream:
            return _sse(runner, stream, lambda delta, reason: {**head, "choices": [
                {"index": 0, "text": delta, "logprobs": None, "finish_reason": reason}]}, body, len(prompt_ids))
        req = await _finish(runner, stream, request)
        prefix = (body.prompt if isinstance(body.prompt, str) else tok.decode(prompt_ids)) if body.echo else ""
        choice = {"index": 0, "text": prefix + req.text, "finish_reason": req.finish_reason,
                  "logprobs": _completion_logprobs(tok, prompt_ids if body.echo else [], echoed, req)
                  if body.logprobs is not None else None}
        return {**head, "choices": [choice], "usage": _usage(len(prompt_ids), req)}

    @app.post("/v1/chat/completions", dependencies=[Depends(auth)])
    async def chat(body: ChatRequest, request: Request):
        check_model(body.model)
        limit_prompt("".join(m.content for m in body.messages), "messages")
        text = await run_in_threadpool(template.render, messages=[m.model_dump() for m in body.messages],
                                       add_generation_prompt=True)
        prompt_ids = await run_in_threadpool(tok.encode, text)
        stream = await run(prompt_ids, params(body, (body.top_logprobs or 0) if body.logprobs else None), body.stream)
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": rid, "created": created, "model": engine.name}
        if body.stream:
            def chunk(delta, reason, first=[True]):  # noqa: B006 - the first chunk carries the role
                d = {"content": delta}
                if first[0]:
                    d["role"], first[0] = "assistant", False
                return {**head, "object": "chat.completion.chunk",
                        "choices": [{"index": 0, "delta": d, "finish_reason": reason}]}
            return _sse(runner, stream, chunk, body, len(prompt_ids))
        req = await _finish(runner, stream, request)
        choice = {"index": 0, "message": {"role": "assistant", "content": req.text},
                  "finish_reason": req.finish_reason,
                  "logprobs": _chat_logprobs(tok, req) if body.logprobs else None}
        return {**head, "object": "chat.completion", "choices": [choice], "usage": _usage(len(prompt_ids), req)}

    @app.get("/health")
    def health():
        if not runner.alive:
            return openai_error(503, f"the engine is not running: {runner.error}", "server_error")
        return {"status": "ok", "model": engine.name}

    @app.get("/version")
    def version():
        return {"version": __version__, "engine": "builtin", "compile": engine.compile}

    @app.get("/metrics")
    def prometheus_metrics():
        return Response(generate_latest(runner.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _usage(prompt_tokens: int, req) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": len(req.output_ids),
            "total_tokens": prompt_tokens + len(req.output_ids)}


def _completion_logprobs(tok, prompt_ids: list[int], echoed: list, req) -> dict:
    """OpenAI's completion logprobs over the echoed prompt (first token: None) and the generated tokens;
    text offsets count characters from the start of the returned text, each token's text after the last
    (as vLLM computes them)."""
    entries = echoed + req.logprobs
    ids = prompt_ids + [x["token"] for x in req.logprobs]
    texts = [tok.decode([i]) for i in ids]
    return {"tokens": texts,
            "token_logprobs": [x and x["logprob"] for x in entries],
            "top_logprobs": [x and {tok.decode([i]): v for i, v in x["top"].items()} for x in entries],
            "text_offset": [0, *itertools.accumulate(len(t) for t in texts[:-1])] if texts else []}


def _chat_logprobs(tok, req) -> dict:
    """OpenAI's chat logprobs: per generated token its text, bytes and logprob, and the top alternatives."""
    def entry(token_id: int, logprob: float) -> dict:
        text = tok.decode([token_id])
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8", "surrogatepass"))}

    return {"content": [{**entry(x["token"], x["logprob"]),
                         "top_logprobs": [entry(i, v) for i, v in x["top"].items()]} for x in req.logprobs]}


async def _finish(runner: AsyncEngine, stream, request: Request):
    """The finished request; a client that goes away meanwhile aborts it (vLLM's finished_reason abort)."""
    async def consume():
        async for _ in runner.stream(stream):
            pass

    task = asyncio.ensure_future(consume())
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=0.5)
            if not task.done() and await request.is_disconnected():
                runner.abort(stream)
                break
        await task
    finally:
        task.cancel()
    return stream.request


def _sse(runner: AsyncEngine, stream, chunk, body: _Sampling, prompt_tokens: int) -> StreamingResponse:
    """Server-sent events: one chunk per batch of new text, the finish reason last, then [DONE]. Text that
    could be the start of a stop string is held back until it cannot be."""
    hold = max((len(s) for s in stream.request.params.stop), default=1) - 1

    async def events():
        sent = 0
        req = None
        try:
            async for _, req, final in runner.stream(stream):
                text = req.text
                upto = len(text) if final else max(sent, len(text) - hold)
                if not final and text[upto - 1: upto] == "\ufffd":  # half of a multi-byte character
                    upto -= 1
                if upto > sent:
                    yield f"data: {json.dumps(chunk(text[sent:upto], None))}\n\n"
                    sent = upto
        finally:  # the client went away (the response was cancelled): stop generating for it
            if not stream.request.finished:
                runner.abort(stream)
        yield f"data: {json.dumps(chunk('', req.finish_reason))}\n\n"
        if (body.stream_options or {}).get("include_usage"):
            final: dict[str, Any] = chunk("", None)
            final["choices"], final["usage"] = [], _usage(prompt_tokens, req)
            yield f"data: {json.dumps(final)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


def _chat_template(settings: InferenceSettings):
    import jinja2

    cfg = settings.model / "tokenizer_config.json"
    source = json.loads(cfg.read_text()).get("chat_template") if cfg.exists() else None
    env = jinja2.Environment(autoescape=False, keep_trailing_newline=True)  # noqa: S701 - plain text, not HTML
    return env.from_string(source or DEFAULT_CHAT_TEMPLATE)
