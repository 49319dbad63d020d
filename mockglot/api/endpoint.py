"""How every public REST endpoint runs: authenticate, rate-limit, check scope, read the body, apply
idempotency, call the handler, and answer in the contract's envelope with the usage headers.

An API area declares its endpoints as `Endpoint` values (path, method, wire types, scope); the same table
builds the routes and the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

from mockglot import validation
from mockglot.errors import ApiError
from mockglot.http import JSON, RawHeaders, Request, Response, error_response, raw_headers, response
from mockglot.router import HttpHandler
from mockglot.state.auth import ApiKey
from mockglot.state.idempotency import StoredResponse
from mockglot.state.ratelimit import RateLimited, RateStatus
from mockglot.state.server import ServerState
from mockglot.wire import encode

T = TypeVar("T")
WARNING_HEADER = b"x-mockglot-warning"
UNKNOWN_FIELDS_WARNING = "ignored unknown field(s): "
MAX_WARNED_FIELDS = 10


@dataclass(slots=True)
class Reply:
    status: int
    body: Any
    media_type: str | None = None  # None: `body` is a wire value encoded as JSON; else raw text
    headers: Mapping[str, str] | None = None


@dataclass(slots=True)
class Context:
    state: ServerState
    key: ApiKey
    request: Request
    body: Any
    warnings: list[str] | None = None  # made by the first warning: most requests have none

    def path(self, name: str) -> str:
        return self.request.path_params[name]

    def query(self, name: str, default: str | None = None) -> str | None:
        return self.request.query(name, default)

    def parse(self, type_: type[T]) -> T:
        value, unknown = validation.convert(self.body or {}, type_, strict=self.state.settings.strict)
        if unknown:
            shown = ", ".join(unknown[:MAX_WARNED_FIELDS])
            more = f" and {len(unknown) - MAX_WARNED_FIELDS} more" if len(unknown) > MAX_WARNED_FIELDS else ""
            self.warnings = [*(self.warnings or ()), f"{UNKNOWN_FIELDS_WARNING}{shown}{more}"]
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


def usage_headers(key: ApiKey, rate: RateStatus) -> RawHeaders:
    return [
        (b"x-ratelimit-limit", b"%d" % rate.limit),
        (b"x-ratelimit-remaining", b"%d" % rate.remaining),
        (b"x-ratelimit-reset", b"%d" % rate.reset),
        (b"x-api-credits-remaining", b"%d" % key.credits_remaining),
        (b"x-api-credits-used", b"%d" % key.credits_used),
    ]


def http_handler(endpoint: Endpoint, state: ServerState) -> HttpHandler:
    has_body = endpoint.method == "POST"

    async def run(request: Request) -> Response:
        key: ApiKey | None = None
        rate: RateStatus | None = None
        claimed: tuple[Any, str] | None = None
        try:
            key = state.keys.authenticate(request.header(b"authorization"), request.header(b"x-api-key"))
            try:
                rate = state.rate_limiter.hit(key.key, key.rate_limit, state.clock.now())
            except RateLimited as exc:
                rate = exc.rate
                raise
            key.require(endpoint.scope)
            body = request.json(required=endpoint.body_required) if has_body else None
            idempotency_key = request.header(b"idempotency-key") if endpoint.idempotent else None
            if idempotency_key is not None:
                fingerprint = _fingerprint(request, body)
                replay = state.idempotency.begin(key.owner, idempotency_key, fingerprint, state.clock.now())
                if replay is not None:
                    headers = [*usage_headers(key, rate), (b"idempotent-replayed", b"true")]
                    return response(replay.status, replay.body, JSON, headers)
                claimed = (key.owner, idempotency_key)
            ctx = Context(state=state, key=key, request=request, body=body)
            reply = await endpoint.handler(ctx)
            content = reply.body if reply.media_type else encode(reply.body)
            if claimed is not None:
                state.idempotency.complete(*claimed, StoredResponse(reply.status, content))
                claimed = None
            headers = usage_headers(key, rate)
            if reply.headers:
                headers += raw_headers(reply.headers)
            if ctx.warnings:
                headers.append((WARNING_HEADER, header_safe("; ".join(ctx.warnings)).encode()))
            return response(reply.status, content, reply.media_type or JSON, headers)
        except ApiError as exc:
            headers = usage_headers(key, rate) if key is not None and rate is not None else []
            return error_response(exc, request.id, headers)
        finally:
            if claimed is not None:
                state.idempotency.abandon(*claimed)

    return run


def header_safe(text: str) -> str:
    """A header value may only hold printable latin-1: escape the rest (a field name can be any string)."""
    return text.encode("unicode_escape").decode("ascii")


def _fingerprint(request: Request, body: Any) -> str:
    canonical = msgspec.json.encode(body, order="sorted").decode() if body is not None else ""
    return f"{request.method} {request.path} {canonical}"
