"""How every public REST endpoint runs: read the body, authenticate, rate-limit, check scope, apply idempotency,
call the handler, and answer in the contract's envelope with the usage headers.

An API area declares its endpoints as `Endpoint[Context]` rows (path, method, wire types, scope); the same table
builds the routes and the OpenAPI document.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any, TypeVar

import msgspec
from starlette.types import Receive, Scope, Send

from mockglot import validation
from mockglot.errors import ApiError
from mockglot.http import (
    JSON,
    Endpoint,
    RawHeaders,
    RawResponse,
    Reply,
    Request,
    credentials_of,
    decode_json,
    error_response,
    headers_of,
    origin,
    raw_headers,
    read_body,
    request_id,
    response,
)
from mockglot.state.auth import SCOPES, ApiKey
from mockglot.state.idempotency import Claim, StoredResponse
from mockglot.state.ratelimit import RateLimited, RateStatus
from mockglot.state.server import ServerState
from mockglot.wire import encode

T = TypeVar("T")
WARNING_HEADER = b"x-mockglot-warning"
UNKNOWN_FIELDS_WARNING = "ignored unknown field(s): "
MAX_WARNED_FIELDS = 10
MAX_WARNED_NAME = 40  # characters of a field's name the warning shows: a header has room for names, not documents
DELAY_SCOPE_KEY = "mockglot.delay"  # a latency fault's delay, served once the request holds its idempotency key
KEY_SCOPE_KEY = "mockglot.key"  # the key the request authenticated with, for its record (no second lookup)
WARNINGS_SCOPE_KEY = "mockglot.warnings"  # what the warning header says, for the contract report (no re-parsing)
CREATED_SCOPE_KEY = "mockglot.created"  # the ID of what a 201 created, for the journal (no decoding the answer)

__all__ = ["Context", "Endpoint", "PublicEndpoint", "Reply"]


class Context(msgspec.Struct):
    """What a handler is given. A Struct: made in C, once a request."""

    state: ServerState
    key: ApiKey
    request: Request
    body: Any
    warnings: list[str] | None = None  # made by the first warning: most requests have none

    def path(self, name: str) -> str:
        value: str = self.request.path_params[name]
        return value

    def query(self, name: str, default: str | None = None) -> str | None:
        return self.request.query_params.get(name, default)

    def origin(self, scheme: str = "http") -> str:
        return origin(self.request, scheme)

    def parse(self, type_: type[T]) -> T:
        value, unknown = validation.convert(self.body or {}, type_, strict=self.state.settings.strict)
        if unknown:
            shown = ", ".join(_shortened(name) for name in unknown[:MAX_WARNED_FIELDS])
            more = f" and {len(unknown) - MAX_WARNED_FIELDS} more" if len(unknown) > MAX_WARNED_FIELDS else ""
            self.warnings = [*(self.warnings or ()), f"{UNKNOWN_FIELDS_WARNING}{shown}{more}"]
        return value


def usage_headers(key: ApiKey, rate: RateStatus) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-ratelimit-limit", b"%d" % rate.limit),
        (b"x-ratelimit-remaining", b"%d" % rate.remaining),
        (b"x-ratelimit-reset", b"%d" % rate.reset),
        (b"x-api-credits-remaining", b"%d" % key.credits_remaining),
        (b"x-api-credits-used", b"%d" % key.credits_used),
    ]


class PublicEndpoint:
    """The ASGI app of one public endpoint (Starlette's `Route` takes it as it is). What the row says is read
    once, here, rather than from the row on every request."""

    def __init__(self, endpoint: Endpoint[Context], state: ServerState) -> None:
        if endpoint.scope not in SCOPES:
            raise ValueError(f"{endpoint.method} {endpoint.path}: unknown scope {endpoint.scope!r}; known: {SCOPES}")
        self.endpoint = endpoint
        self.state = state
        self.has_body = endpoint.method == "POST"
        self.handler = endpoint.handler
        self.required_scope = endpoint.scope
        self.body_required = endpoint.body_required
        self.idempotent = endpoint.idempotent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.run(Request(scope, receive))
        await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})

    async def run(self, request: Request) -> RawResponse:
        """Every `ApiError` becomes its envelope here (the edge middleware calls this without Starlette's exception
        layer). Raises `ClientDisconnect` (before anything changed) when the client leaves mid-body."""
        state = self.state
        scope = request.scope
        key: ApiKey | None = None
        rate: RateStatus | None = None
        claimed: Claim | None = None
        try:
            raw = await read_body(request) if self.has_body else b""
            key = state.keys.authenticate(credentials_of(scope))
            scope[KEY_SCOPE_KEY] = key
            try:
                rate = state.rate_limiter.hit(key.key, key.rate_limit, state.clock.now())
            except RateLimited as exc:
                rate = exc.rate
                raise
            key.require(self.required_scope)
            body = decode_json(request, raw, required=self.body_required) if self.has_body else None
            idempotency_key = headers_of(scope).get("idempotency-key") if self.idempotent else None
            if idempotency_key is not None:
                fingerprint = _fingerprint(request, body)
                claim = state.idempotency.begin(key.owner, idempotency_key, fingerprint, state.clock.now())
                replay = claim.response
                if replay is not None:
                    headers = [*usage_headers(key, rate), (b"idempotent-replayed", b"true")]
                    return response(replay.status, replay.body, JSON, headers)
                claimed = claim
            if DELAY_SCOPE_KEY in scope:  # a latency fault holds the request here: in flight, its key claimed
                delay = scope.pop(DELAY_SCOPE_KEY)
                if delay:
                    await state.coordinator.outside(asyncio.sleep(delay))
                    # A reset meanwhile replaced the key's record and its organization's balance: serve and
                    # charge the request as the key stands now.
                    key = scope[KEY_SCOPE_KEY] = state.keys.authenticate(credentials_of(scope))
                    key.require(self.required_scope)
            ctx = Context(state, key, request, body)
            reply = await self.handler(ctx)
            content = reply.body if reply.media_type else encode(reply.body)
            if reply.status == 201:
                scope[CREATED_SCOPE_KEY] = getattr(reply.body, "id", None)
            if claimed is not None:
                state.idempotency.complete(claimed, StoredResponse(reply.status, content))
                claimed = None
            headers = usage_headers(key, rate)
            if reply.headers:
                headers += raw_headers(reply.headers)
            if ctx.warnings:
                scope[WARNINGS_SCOPE_KEY] = ctx.warnings
                headers.append((WARNING_HEADER, header_safe("; ".join(ctx.warnings)).encode()))
            return response(reply.status, content, reply.media_type or JSON, headers)
        except ApiError as exc:
            extra: RawHeaders = usage_headers(key, rate) if key is not None and rate is not None else []
            return error_response(exc, request_id(scope), extra)
        finally:
            if claimed is not None:
                state.idempotency.abandon(claimed)


def _shortened(name: str) -> str:
    return name if len(name) <= MAX_WARNED_NAME else f"{name[: MAX_WARNED_NAME - 1]}…"


def header_safe(text: str) -> str:
    """A header value may only hold printable latin-1: escape the rest (a field name can be any string)."""
    return text.encode("unicode_escape").decode("ascii")


def _fingerprint(request: Request, body: Any) -> str:
    """A digest, not the request: a key is kept a day, and its body may be a megabyte. No body is `{}`."""
    canonical = msgspec.json.encode(body, order="sorted") if body is not None else b"{}"
    route = f"{request.method} {request.scope['path']} ".encode("utf-8", "surrogatepass")
    return hashlib.sha256(route + canonical).hexdigest()
