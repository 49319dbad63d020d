"""How every public REST endpoint runs: authenticate, rate-limit, check scope, read the body, apply
idempotency, call the handler, and answer in the contract's envelope with the usage headers.

An API area declares its endpoints as `Endpoint` values (path, method, wire types, scope); the same table
builds the routes and the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from mockglot import validation
from mockglot.errors import ApiError
from mockglot.http import PreparedResponse, error_response, header, json_response, read_json_body, request_id
from mockglot.state.auth import ApiKey
from mockglot.state.idempotency import StoredResponse
from mockglot.state.ratelimit import RateLimited, RateStatus
from mockglot.state.server import ServerState
from mockglot.wire import encode

T = TypeVar("T")
WARNING_HEADER = "X-Mockglot-Warning"
MAX_WARNED_FIELDS = 10


@dataclass(slots=True)
class Reply:
    status: int
    body: Any
    media_type: str | None = None  # None: `body` is a wire value encoded as JSON; else raw text
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Context:
    state: ServerState
    key: ApiKey
    request: Request
    body: Any
    warnings: list[str] = field(default_factory=list)

    def path(self, name: str) -> str:
        return self.request.path_params[name]

    def parse(self, type_: type[T]) -> T:
        value, unknown = validation.convert(self.body or {}, type_, strict=self.state.settings.strict)
        if unknown:
            shown = ", ".join(unknown[:MAX_WARNED_FIELDS])
            more = f" and {len(unknown) - MAX_WARNED_FIELDS} more" if len(unknown) > MAX_WARNED_FIELDS else ""
            self.warnings.append(f"ignored unknown field(s): {shown}{more}")
        return value


Handler = Callable[[Context], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    scope: str
    summary: str
    status: int = 200
    request: type | None = None
    response: type | None = None
    body_required: bool = False
    idempotent: bool = False
    query: dict[str, type] = field(default_factory=dict)
    media_types: tuple[str, ...] = ()


def usage_headers(key: ApiKey, rate: RateStatus) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(rate.limit),
        "X-RateLimit-Remaining": str(rate.remaining),
        "X-RateLimit-Reset": str(rate.reset),
        "X-API-Credits-Remaining": str(key.credits_remaining),
        "X-API-Credits-Used": str(key.credits_used),
    }


def route(endpoint: Endpoint, state: ServerState) -> Route:
    async def run(request: Request) -> Response:
        rid = request_id(request)
        key: ApiKey | None = None
        rate: RateStatus | None = None
        claimed: tuple[Any, str] | None = None
        try:
            key = state.keys.authenticate(header(request, b"authorization"), header(request, b"x-api-key"))
            try:
                rate = state.rate_limiter.hit(key.key, key.rate_limit, state.clock.now())
            except RateLimited as exc:
                rate = exc.rate
                raise
            key.require(endpoint.scope)
            body = await read_json_body(request, required=endpoint.body_required) if endpoint.method == "POST" else None
            idempotency_key = header(request, b"idempotency-key") if endpoint.idempotent else None
            if idempotency_key is not None:
                fingerprint = _fingerprint(request, body)
                replay = state.idempotency.begin(key.owner, idempotency_key, fingerprint, state.clock.now())
                if replay is not None:
                    headers = {**usage_headers(key, rate), "Idempotent-Replayed": "true"}
                    return json_response(replay.status, replay.body, headers)
                claimed = (key.owner, idempotency_key)
            ctx = Context(state=state, key=key, request=request, body=body)
            reply = await endpoint.handler(ctx)
            content = reply.body if reply.media_type else encode(reply.body)
            if claimed is not None:
                state.idempotency.complete(*claimed, StoredResponse(reply.status, content))
                claimed = None
            headers = {**usage_headers(key, rate), **reply.headers}
            if ctx.warnings:
                headers[WARNING_HEADER] = header_safe("; ".join(ctx.warnings))
            if reply.media_type:
                return PreparedResponse(reply.status, content, reply.media_type, headers)
            return json_response(reply.status, content, headers)
        except ApiError as exc:
            headers = usage_headers(key, rate) if key is not None and rate is not None else {}
            return error_response(exc, rid, headers)
        finally:
            if claimed is not None:
                state.idempotency.abandon(*claimed)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await run(Request(scope, receive))
        await response(scope, receive, send)

    # A plain ASGI app (not a request handler) spares each request Starlette's wrapper layers.
    return Route(endpoint.path, ASGIEndpoint(app), methods=[endpoint.method], name=endpoint.summary)


class ASGIEndpoint:
    """Starlette serves a route's endpoint as-is when it is not a function."""

    __slots__ = ("app",)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def header_safe(text: str) -> str:
    """A header value may only hold printable latin-1: escape the rest (a field name can be any string)."""
    return text.encode("unicode_escape").decode("ascii")


def _fingerprint(request: Request, body: Any) -> str:
    canonical = msgspec.json.encode(body, order="sorted").decode() if body is not None else ""
    return f"{request.method} {request.scope['path']} {canonical}"
