"""HTTP plumbing shared by the public API and the control plane: request IDs, bodies, the error envelope."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mockglot.errors import ApiError
from mockglot.state.randomness import Randomness

log = logging.getLogger("mockglot")

MAX_BODY_BYTES = 1024 * 1024
JSON = "application/json"


class RequestIdMiddleware:
    """Gives every HTTP request a `req_` ID and puts it on every response as `X-Request-ID`."""

    def __init__(self, app: ASGIApp, randomness: Randomness, clock_ms: Any) -> None:
        self.app = app
        self.randomness = randomness
        self.clock_ms = clock_ms

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = "req_" + self.randomness.ulid("request", self.clock_ms())
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())

        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if started:  # nothing left to answer with: the server drops the connection
                raise
            # Answered here rather than by Starlette's outermost handler, so a 500 carries its X-Request-ID too.
            response = await unhandled_exception(Request(scope), exc)
            await response(scope, receive, send_with_id)


def header(request: Request, name: bytes) -> str | None:
    """One request header by its lowercase name, from a dict built once per request."""
    headers = request.scope.get("mockglot.headers")
    if headers is None:
        headers = request.scope["mockglot.headers"] = dict(request.scope["headers"])
    value = headers.get(name)
    return None if value is None else value.decode("latin-1")


def request_id(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")


class PreparedResponse(Response):
    """A response built straight from its parts: on the hot path, Starlette's header normalisation costs more
    than the rest of a request. `headers` must be ASCII (ours are, and warnings are escaped)."""

    def __init__(self, status: int, body: bytes, media_type: str, headers: Mapping[str, str] | None = None) -> None:
        self.status_code = status
        self.body = body
        self.background = None
        raw = [(b"content-length", str(len(body)).encode()), (b"content-type", media_type.encode())]
        if headers:
            raw += [(name.lower().encode(), value.encode("latin-1")) for name, value in headers.items()]
        self.raw_headers = raw


def json_response(status: int, content: bytes, headers: Mapping[str, str] | None = None) -> Response:
    return PreparedResponse(status, content, JSON, headers)


def error_response(exc: ApiError, request_id: str | None, headers: Mapping[str, str] | None = None) -> Response:
    extra = dict(headers or {})
    if exc.retry_after is not None:
        extra["Retry-After"] = str(exc.retry_after)
    return json_response(exc.status, msgspec.json.encode(exc.body(request_id)), extra)


async def read_json_body(request: Request, *, required: bool) -> Any:
    """The body as decoded JSON (an object), or None when it may be and is empty."""
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise ApiError("invalid_request", f"The request body is larger than {MAX_BODY_BYTES} bytes.")
    if not body.strip():
        if required:
            raise ApiError(
                "invalid_request",
                "The request body is empty. Send a JSON object with `Content-Type: application/json`.",
            )
        return None
    content_type = header(request, b"content-type") or ""
    if content_type.split(";", 1)[0].strip().lower() != JSON:
        raise ApiError(
            "invalid_request",
            f"Unsupported Content-Type {content_type or '(none)'!r}: send the body as JSON with "
            "`Content-Type: application/json`.",
        )
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise ApiError("invalid_request", f"The request body is not valid JSON: {exc}.") from None
    except RecursionError:
        raise ApiError("invalid_request", "The request body is nested too deeply to be a request.") from None
    if not isinstance(value, dict):
        raise ApiError("invalid_request", f"The request body must be a JSON object, not {type(value).__name__}.")
    return value


async def http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 in the API's envelope."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 404:
        error = ApiError(
            "route_not_found",
            f"No route {request.method} {request.url.path}. The API lives under /v1 (see /openapi.json).",
        )
    elif status == 405:
        error = ApiError(
            "method_not_allowed",
            f"{request.method} is not allowed on {request.url.path}. See /openapi.json for the methods "
            "each path takes.",
        )
    else:
        error = ApiError("invalid_request", str(getattr(exc, "detail", "")) or "Bad request.", status=status)
    headers = dict(getattr(exc, "headers", None) or {})
    return error_response(error, request_id(request), headers)


async def unhandled_exception(request: Request, exc: Exception) -> Response:
    """A bug. It should never happen; when it does, it is an envelope and a log line, not a dropped socket."""
    log.exception("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    error = ApiError("internal_error", "mockglot hit an internal error; this is a bug, please report it.")
    return error_response(error, request_id(request))
