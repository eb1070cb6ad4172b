"""Structured logs for the services: one JSON object per line on stderr, every line of a request carrying its
request id (the client's X-Request-ID when it is a sane token, else a fresh one, echoed in the response), an
access line per request, and unhandled errors logged with their traceback under the same id, so a user's
report ("request 7f3a... failed") leads to the trace."""

from __future__ import annotations

import json
import logging
import re
import time
import traceback
import uuid
from contextvars import ContextVar

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
_SANE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
FIELDS = ("service", "method", "path", "route", "status", "duration_ms", "client")


def _stamp_request_id():
    """Every log record made while a request is served carries its id (taken when the record is made, so a
    handler formatting it later, or on another thread, still has it)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "llmlab_request_id", False):
        return

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return record

    factory.llmlab_request_id = True
    logging.setLogRecordFactory(factory)


_stamp_request_id()


class JSONFormatter(logging.Formatter):
    """{"ts", "level", "logger", "message", "request_id", and the access fields; "error" with the traceback}."""

    def __init__(self, service: str = ""):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage(),
               "request_id": getattr(record, "request_id", None), "service": self.service}
        out |= {k: getattr(record, k) for k in FIELDS if hasattr(record, k)}
        if record.exc_info:
            out["error"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return json.dumps({k: v for k, v in out.items() if v not in (None, "")}, default=str)


def uvicorn_config(service: str, level: str = "INFO") -> dict:
    """A logging dictConfig for ``uvicorn.run(log_config=...)``: uvicorn's own loggers and llmlab's through
    the JSON formatter on stderr; uvicorn's access log off (RequestLog writes a richer one)."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {"version": 1, "disable_existing_loggers": False,
            "formatters": {"json": {"()": JSONFormatter, "service": service}},
            "handlers": {"stderr": handler},
            "loggers": {"uvicorn": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
                        "uvicorn.error": {"level": "INFO"},
                        "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
                        "llmlab": {"handlers": ["stderr"], "level": level, "propagate": False},
                        "services": {"handlers": ["stderr"], "level": level, "propagate": False}}}


ACCESS = logging.getLogger("llmlab.access")
ERRORS = logging.getLogger("llmlab.errors")


class RequestLog:
    """Pure ASGI middleware (outermost): the request id, the access line, the traceback of an unhandled error."""

    def __init__(self, app, service: str):
        self.app, self.service = app, service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        rid = given if _SANE.fullmatch(given) else uuid.uuid4().hex
        token = REQUEST_ID.set(rid)
        t0, status = time.perf_counter(), 500

        async def tagged(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid.encode())]}
            await send(message)

        fields = {"service": self.service, "method": scope["method"][:16], "path": scope["path"][:200],
                  "client": (scope.get("client") or ("", 0))[0]}
        try:
            await self.app(scope, receive, tagged)
        except Exception:
            ERRORS.exception("unhandled error", extra=fields)  # the record factory stamps the request id
            raise
        finally:
            ACCESS.info("request", extra={**fields, "status": status,
                                          "route": getattr(scope.get("route"), "path", None),
                                          "duration_ms": round((time.perf_counter() - t0) * 1e3, 2)})
            REQUEST_ID.reset(token)
