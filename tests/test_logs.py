"""Structured logs: JSON lines whose request ids are echoed to the client and found again in the traceback of
an unhandled error; every service installs the middleware, and a real `llmlab serve` process writes nothing
but JSON lines."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from llmlab.platform.logs import JSONFormatter, RequestLog


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/ok/{name}")
    def ok(name: str):
        logging.getLogger("llmlab.test").info("hello %s", name)
        return {"name": name}

    @app.get("/boom")
    def boom():
        raise RuntimeError("the handler broke")

    app.add_middleware(RequestLog, service="demo")
    return app


def test_request_ids_reach_the_access_line_and_the_error_trace(caplog):
    caplog.set_level(logging.INFO)
    fmt = JSONFormatter("demo")
    with TestClient(_app(), raise_server_exceptions=False) as c:
        r = c.get("/ok/ada", headers={"X-Request-ID": "trace-me-1"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "trace-me-1"
        lines = [json.loads(fmt.format(rec)) for rec in caplog.records]
        hello = next(x for x in lines if x["message"] == "hello ada")
        access = next(x for x in lines if x["logger"] == "llmlab.access")
        assert hello["request_id"] == access["request_id"] == "trace-me-1"  # a handler's own line carries it too
        assert access | {"duration_ms": 0} == {**access, "method": "GET", "path": "/ok/ada", "route": "/ok/{name}",
                                               "status": 200, "service": "demo", "duration_ms": 0}
        caplog.clear()
        r = c.get("/boom", headers={"X-Request-ID": "bad id with spaces"})  # not a sane token: replaced
        assert r.status_code == 500
        lines = [json.loads(fmt.format(rec)) for rec in caplog.records]
        error = next(x for x in lines if x["logger"] == "llmlab.errors")
        access = next(x for x in lines if x["logger"] == "llmlab.access")
        assert error["request_id"] == access["request_id"] and len(error["request_id"]) == 32
        assert "RuntimeError: the handler broke" in error["error"] and access["status"] == 500


@pytest.mark.parametrize("service", ["grader", "inference", "retrieval"])
def test_every_service_installs_request_logs_outermost(service):
    import importlib

    source = importlib.import_module(f"services.{service}.app").__file__
    text = open(source).read()
    assert f'app.add_middleware(RequestLog, service="{service}")' in text
    last = text.rfind("app.add_middleware(")
    assert text[last:].startswith("app.add_middleware(RequestLog")  # added last: Starlette runs it first


def test_a_served_process_writes_only_json_lines(tiny_model):
    import httpx

    from llmlab.serving import start, stop

    proc, base = start("inference", "--model", str(tiny_model), "--served-model-name", "tiny")
    try:
        assert httpx.post(f"{base}/v1/completions", json={"model": "tiny", "prompt": "the", "max_tokens": 3},
                          headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
        assert httpx.post(f"{base}/v1/completions", json={"model": "nope", "prompt": "x"}).status_code == 404
    finally:
        stop(proc)
    proc.log.seek(0)
    lines = [json.loads(line) for line in proc.log.read().decode().splitlines() if line.strip()]
    mine = [x for x in lines if x.get("request_id") == "abc-123"]
    assert mine and mine[-1]["path"] == "/v1/completions" and mine[-1]["status"] == 200
    assert mine[-1]["service"] == "inference" and any(x.get("status") == 404 for x in lines)
