"""The edge every HTTP request crosses, in one pure-ASGI pass: its request ID, the header limits, the
instrumentation of the public API (`Prefer`, REST faults, the journal, the inspector feed, the contract report:
`mockglot.control.instrumentation`), and the error envelope for what no route answers (404, 405), what a
handler raises (`ApiError`) and what fails (500).

One middleware rather than one per concern: each layer costs every request a `send` wrapper and its calls, and
the REST path is measured against a bare Starlette endpoint (`bench/rest.py`). Pure ASGI, so middleware a user
adds to the app (`app.add_middleware(CORSMiddleware, ...)`) wraps HTTP and WebSockets alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mockglot.api.endpoint import DELAY_SCOPE_KEY, PublicEndpoint
from mockglot.control.instrumentation import CLIENT_CLOSED, PUBLIC_PREFIX, Instrumentation
from mockglot.errors import ApiError
from mockglot.http import (
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    REQUEST_ID_SCOPE_KEY,
    RawHeaders,
    RawResponse,
    Request,
    Response,
    error_response,
    headers_of,
    raw_headers,
    request_id,
)
from mockglot.routing import IndexedRouter
from mockglot.state.replica import Elsewhere
from mockglot.state.server import ServerState

log = logging.getLogger("mockglot")
_flatten = itertools.chain.from_iterable


class EdgeMiddleware:
    """Gives each HTTP request its ID (`X-Request-ID`, and `request_id` in every error), refuses oversized headers
    (431), instruments requests under /v1, and turns a failure anywhere inside into the 500 envelope and one log
    line rather than a dropped socket."""

    def __init__(self, app: ASGIApp, state: ServerState, router: IndexedRouter | None = None) -> None:
        self.app = app
        self.state = state
        self.instrumentation = Instrumentation(app, state, router)
        self.router = router  # the app's: a request an endpoint table answers goes straight to its endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket" and header_bytes(scope["headers"]) is None:
                await send({"type": "websocket.close", "code": 1008})  # before the handshake: a 403
                return
            await self.app(scope, receive, send)
            return
        state = self.state
        rid = state.randomness.new_id("req", "request", state.clock.now())
        scope[REQUEST_ID_SCOPE_KEY] = rid
        size = header_bytes(scope["headers"])
        instrumented = size is not None and scope["path"].startswith(PUBLIC_PREFIX)
        started = time.perf_counter()
        if instrumented and self.router is not None and not state.faults.has_rest and "prefer" not in headers_of(scope):
            endpoint = self.router.endpoint_app(scope)  # as nearly every request runs
            if type(endpoint) is PublicEndpoint:
                await self._public(endpoint, scope, receive, send, rid, started, size or 0)
                return
        id_header = (b"x-request-id", rid.encode())
        held: Message | None = None  # an instrumented response's start, held until its body: the journal goes first
        recorded = not instrumented
        answered = False  # a response start went out: too late for the 500 envelope

        def record(status: int, body: bytes) -> None:
            nonlocal recorded
            recorded = True
            self.instrumentation.record(scope, started, size or 0, status, body)

        async def start(message: Message) -> None:
            nonlocal answered
            answered = True
            if DELAY_SCOPE_KEY in scope:  # a latency fault the endpoint did not serve (it answered before its
                await self.state.coordinator.outside(asyncio.sleep(scope.pop(DELAY_SCOPE_KEY)))  # handler ran)
            message["headers"] = [*message["headers"], id_header]
            await send(message)

        async def send_edge(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                if recorded:
                    await start(message)
                else:
                    held = message
                return
            if held is not None:
                record(held["status"], message.get("body", b""))
                first, held = held, None
                await start(first)
            await send(message)

        try:
            if size is None:
                error = ApiError(
                    "headers_too_large",
                    f"The request has more than {MAX_HEADERS} headers or {MAX_HEADER_BYTES} bytes of them; send "
                    "fewer or shorter headers.",
                )
                await error_response(error, rid)(scope, receive, send_edge)
            elif instrumented:
                await self.instrumentation(scope, receive, send_edge)
                if held is not None:  # a dropped response: started, never completed
                    record(held["status"], b"")
                    first, held = held, None
                    await start(first)
            else:
                await self.app(scope, receive, send_edge)
        except Exception as exc:
            if failed(exc, scope, None if recorded else record) and not answered:
                held = None
                await internal_error(rid)(scope, receive, send_edge)

    async def _public(
        self, endpoint: PublicEndpoint, scope: Scope, receive: Receive, send: Send, rid: str, started: float, size: int
    ) -> None:
        """A request a public endpoint serves, with no fault or `Prefer` to apply: the endpoint is run here, not
        through Starlette's exception layer and the router's pass (it answers its own errors), and its response
        recorded before it is sent, with no `send` wrapper to hold it. What `__call__` does otherwise, in short."""
        record = self.instrumentation.record
        recorded = False
        try:
            response = await endpoint.run(Request(scope, receive))
            recorded = True
            record(scope, started, size, response.status_code, response.body)
        except Exception as exc:
            if not failed(exc, scope, None if recorded else functools.partial(record, scope, started, size)):
                return  # the client left
            response = internal_error(rid)
        headers = response.raw_headers  # made for this response: added to, not copied
        headers.append((b"x-request-id", rid.encode()))
        try:
            await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
            await send({"type": "http.response.body", "body": response.body})
        except Exception:  # too late for any envelope
            log.exception("internal error on %s %s", scope["method"], scope["path"])


def header_bytes(headers: RawHeaders) -> int | None:
    """The bytes of all header names and values, or None past the limits (checked before anything keeps them:
    the request journal does)."""
    if len(headers) > MAX_HEADERS:
        return None
    size = sum(map(len, _flatten(headers)))
    return size if size <= MAX_HEADER_BYTES else None


def failed(exc: Exception, scope: Scope, record: Callable[[int, bytes], object] | None) -> bool:
    """What a failure inside the edge comes to, the same in both its passes (`EdgeMiddleware.__call__`, `_public`):
    True when the 500 envelope is due. `record` journals the request, None once it is. Called only from their
    `except`, so a request that does not fail pays nothing for it."""
    if isinstance(exc, ClientDisconnect):
        if record is not None:
            record(CLIENT_CLOSED, b"")
        return False  # nobody is left to answer; the request changed nothing
    if isinstance(exc, Elsewhere):
        raise exc  # run on the worker holding the session's stream (mockglot/shared/middleware.py), journaled there
    log.exception("internal error on %s %s", scope["method"], scope["path"])
    if record is not None:
        with contextlib.suppress(Exception):  # the failure itself is logged just above
            record(500, b"")
    return True


def internal_error(rid: str | None) -> RawResponse:
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
