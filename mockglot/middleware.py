"""The edge every HTTP request crosses: its request ID, and the error envelope for what no route answers
(404, 405), what a handler raises (`ApiError`) and what fails (500).

Pure ASGI middleware and Starlette exception handlers, so middleware a user adds to the app
(`app.add_middleware(CORSMiddleware, ...)`) wraps HTTP and WebSockets alike.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mockglot.api.endpoint import DELAY_SCOPE_KEY
from mockglot.errors import ApiError
from mockglot.http import (
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    REQUEST_ID_SCOPE_KEY,
    Request,
    Response,
    error_response,
    raw_headers,
    request_id,
)
from mockglot.state.server import ServerState

log = logging.getLogger("mockglot")


class RequestIdMiddleware:
    """Gives each HTTP request its ID (`X-Request-ID`, and `request_id` in every error), and turns a failure
    anywhere inside into the 500 envelope and one log line rather than a dropped socket."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket" and headers_too_large(scope):
                await send({"type": "websocket.close", "code": 1008})  # before the handshake: a 403
                return
            await self.app(scope, receive, send)
            return
        state = self.state
        rid = state.randomness.new_id("req", "request", state.clock.now())
        scope[REQUEST_ID_SCOPE_KEY] = rid
        header = (b"x-request-id", rid.encode())
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                delay = scope.pop(DELAY_SCOPE_KEY, None)
                if delay:  # a latency fault the endpoint did not serve (it answered before its handler ran)
                    await asyncio.sleep(delay)
                message["headers"] = [*message["headers"], header]
            await send(message)

        try:
            if headers_too_large(scope):
                error = ApiError(
                    "headers_too_large",
                    f"The request has more than {MAX_HEADERS} headers or {MAX_HEADER_BYTES} bytes of them; send "
                    "fewer or shorter headers.",
                )
                await error_response(error, rid)(scope, receive, send_with_id)
                return
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            return  # nobody is left to answer; the request changed nothing
        except Exception:
            log.exception("internal error on %s %s", scope["method"], scope["path"])
            if not started:
                await internal_error(rid)(scope, receive, send_with_id)


def headers_too_large(scope: Scope) -> bool:
    """Checked before anything keeps the headers (the request journal does)."""
    headers = scope["headers"]
    return len(headers) > MAX_HEADERS or sum(len(name) + len(value) for name, value in headers) > MAX_HEADER_BYTES


def internal_error(rid: str | None) -> Response:
    """A bug. It should never happen; when it does, it is an envelope and a log line, not a dropped socket."""
    error = ApiError("internal_error", "mockglot hit an internal error; this is a bug, please report it.")
    return error_response(error, rid)


async def api_error(request: Request, exc: Exception) -> Response:
    """An `ApiError` raised by a route that is not one of the endpoint tables' (those answer their own)."""
    assert isinstance(exc, ApiError)
    return error_response(exc, request_id(request.scope))


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's router says 404 or 405: the contract's envelope says it."""
    assert isinstance(exc, HTTPException)
    method, path = request.method, request.scope["path"]
    if exc.status_code == 404:
        error = ApiError(
            "route_not_found",
            f"No route {method} {path}. Every route is listed in /openapi.json (a call starts with POST /v1/sessions).",
        )
    elif exc.status_code == 405:
        error = ApiError(
            "method_not_allowed",
            f"{method} is not allowed on {path}. See /openapi.json for the methods each path takes.",
        )
    else:
        error = ApiError("invalid_request", str(exc.detail), status=exc.status_code)
    return error_response(error, request_id(request.scope), raw_headers(exc.headers or {}))


EXCEPTION_HANDLERS = {HTTPException: http_error, ApiError: api_error}
