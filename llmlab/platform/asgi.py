"""ASGI plumbing the services share: a body limit that answers before reading, request metrics with bounded
labels (both pure ASGI middleware, not Starlette's BaseHTTPMiddleware, which hides a client's disconnect
from the handlers that watch for it), and OpenAI's error envelope for the OpenAI-style services."""

from __future__ import annotations

import json
import time

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

KNOWN_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}  # any other: "OTHER" in metrics


class BodyLimit:
    """Pure ASGI middleware: refuses a body over ``limit`` bytes before reading it (Content-Length) or as
    soon as it grows past it (chunked), and asks ``authorized`` about the credentials of the routes in
    ``guarded`` before a byte of their body is read, so an anonymous 300 MB upload costs nothing."""

    def __init__(self, app, limit: int, guarded: set[tuple[str, str]] = frozenset(), authorized=None,
                 error_body=None):
        self.app, self.limit, self.guarded, self.authorized = app, limit, guarded, authorized
        self.error_body = error_body or (lambda status, detail: {"detail": detail})  # e.g. OpenAI's envelope

    async def _answer(self, send, status: int, detail: str, extra: dict | None = None) -> None:
        body = json.dumps(self.error_body(status, detail)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if (scope["method"], scope["path"]) in self.guarded and not await run_in_threadpool(
                self.authorized, headers.get("authorization")):
            return await self._answer(send, 401, "send 'Authorization: Bearer <token>' with a valid token",
                                      {"www-authenticate": "Bearer"})
        length = headers.get("content-length", "")
        if length and (not length.isdigit() or int(length) > self.limit):
            return await self._answer(send, 413, f"request body over the {self.limit} byte limit")
        seen, over, answered = 0, False, False

        async def limited():  # past the limit, the app sees the client go away...
            nonlocal seen, over
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                over = True
                return {"type": "http.disconnect"}
            return message

        async def replaced(message):  # ...and whatever it answers to that is replaced by a 413
            nonlocal answered
            if not over:
                return await send(message)
            if message["type"] == "http.response.start" and not answered:
                answered = True
                await self._answer(send, 413, f"request body over the {self.limit} byte limit")

        await self.app(scope, limited, replaced)
        if over and not answered:
            await self._answer(send, 413, f"request body over the {self.limit} byte limit")


class Observe:
    """Calls ``observe(method, route, status, seconds)`` for every HTTP request: ``route`` is the matched
    route's template ("unmatched" otherwise) and ``method`` one of KNOWN_METHODS or "OTHER", so label values
    stay bounded whatever clients send."""

    def __init__(self, app, observe):
        self.app, self.observe = app, observe

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, status = time.perf_counter(), 500

        async def watched(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "OTHER"
            route = getattr(scope.get("route"), "path", "unmatched")
            self.observe(method, route, status, time.perf_counter() - t0)


class APIError(Exception):
    """An error a handler raises to answer with OpenAI's envelope (``install_openai_errors``)."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.type, self.param, self.headers = status, type_, param, headers


def openai_envelope(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None) -> dict:
    """OpenAI's error body."""
    return {"error": {"message": message, "type": type_, "param": param, "code": status}}


def openai_error(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 headers: dict | None = None) -> JSONResponse:
    return JSONResponse(openai_envelope(status, message, type_, param), status_code=status, headers=headers)


def install_openai_errors(app) -> None:
    """APIError and request-validation failures (a 400 naming the first bad field) as OpenAI's envelope."""
    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(APIError)
    async def api_error(request, exc: APIError):
        return openai_error(exc.status, str(exc), exc.type, exc.param, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", [])[1:]) or None
        return openai_error(400, f"{param or 'request'}: {first.get('msg', 'invalid request')}", param=param)
