"""How every control-plane endpoint runs: the optional control token, no writes from other origins' web pages,
strict body validation, the envelope.

Areas declare `Endpoint[ControlContext]` rows like the public API does; their `scope` is "".
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from starlette.types import Receive, Scope, Send

from mockglot import validation
from mockglot.errors import ApiError
from mockglot.http import (
    JSON,
    Endpoint,
    Reply,
    Request,
    Response,
    decode_json,
    error_response,
    media_type,
    raw_headers,
    read_body,
    request_id,
    response,
)
from mockglot.inspector import auth as inspector_auth
from mockglot.state.auth import Credentials
from mockglot.state.server import ServerState
from mockglot.webhooks.dispatcher import Dispatcher
from mockglot.wire import encode

T = TypeVar("T")
OPEN_PATHS = ("/_mockglot/health",)  # a container's health check needs no token
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
SAME_ORIGIN_FETCH_SITES = ("same-origin", "none")  # `none`: typed in the address bar, not sent by a page

__all__ = ["ControlContext", "ControlEndpoint", "Endpoint", "Reply", "query_float"]


@dataclass(slots=True)
class ControlContext:
    state: ServerState
    webhooks: Dispatcher  # sends the deliveries in `state.webhooks` (redeliver)
    request: Request
    body: Any

    def path(self, name: str) -> str:
        value: str = self.request.path_params[name]
        return value

    def query(self, name: str, default: str | None = None) -> str | None:
        return self.request.query_params.get(name, default)

    def parse(self, type_: type[T]) -> T:
        value, _ = validation.convert(self.body or {}, type_, strict=True)
        return value


def check_token(request: Request, token: str | None) -> None:
    if token is None or request.scope["path"] in OPEN_PATHS:
        return
    presented = Credentials.read(request.headers).bearer or ""
    if not hmac.compare_digest(presented.encode(), token.encode()) and not inspector_auth.signed_in(request, token):
        raise ApiError(
            "invalid_api_key",
            "The control plane is protected: send `Authorization: Bearer <control token>` (the server's "
            "--control-token).",
        )


def check_not_cross_origin(request: Request) -> None:
    """A web page on another origin must not drive the control plane through a visitor's browser.

    Browsers say where a request comes from (`Sec-Fetch-Site`, `Origin`); programs such as the pytest plugin send
    neither. A write that carries a body must say it is JSON, which a page cannot do without a CORS preflight."""
    site = request.headers.get("sec-fetch-site")
    sender = request.headers.get("origin")
    foreign = site is not None and site.lower() not in SAME_ORIGIN_FETCH_SITES
    if not foreign and sender is not None:
        host = request.headers.get("host")
        foreign = sender == "null" or urlsplit(sender).netloc != host
    if foreign:
        raise ApiError(
            "cross_origin_request",
            "Control-plane writes are refused from web pages of another origin (Origin/Sec-Fetch-Site). Call "
            "the control plane from your test code, or open the page from this server.",
        )
    content_type = request.headers.get("content-type")
    if content_type is not None and media_type(request) != JSON:
        raise ApiError(
            "invalid_request",
            f"Unsupported Content-Type {content_type!r}: control-plane writes take `Content-Type: application/json`.",
        )


class ControlEndpoint:
    """The ASGI app of one control-plane endpoint."""

    def __init__(self, endpoint: Endpoint[ControlContext], state: ServerState, webhooks: Dispatcher) -> None:
        if endpoint.scope:
            raise ValueError(f"{endpoint.method} {endpoint.path}: control-plane endpoints take no key scope")
        self.endpoint = endpoint
        self.state = state
        self.webhooks = webhooks
        self.write = endpoint.method not in SAFE_METHODS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.run(Request(scope, receive))
        await response(scope, receive, send)

    async def run(self, request: Request) -> Response:
        endpoint = self.endpoint
        raw = await read_body(request) if endpoint.method == "POST" else b""
        try:
            check_token(request, self.state.settings.control_token)
            if self.write:
                check_not_cross_origin(request)
            body = decode_json(request, raw, required=endpoint.body_required) if endpoint.method == "POST" else None
            reply = await endpoint.handler(ControlContext(self.state, self.webhooks, request, body))
        except ApiError as exc:
            return error_response(exc, request_id(request.scope))
        content = reply.body if reply.media_type else encode(reply.body)
        return response(reply.status, content, reply.media_type or JSON, raw_headers(reply.headers or {}))


def _number(value: float) -> str:
    """As a person writes it: 1,000,000 rather than 1e+06."""
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


def query_float(ctx: ControlContext, name: str, default: float, low: float, high: float) -> float:
    raw = ctx.query(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ApiError("invalid_field_value", f"`{name}` must be a number, not {raw!r}.", param=name) from None
    if not low <= value <= high:
        message = f"`{name}` must be between {_number(low)} and {_number(high)}."
        raise ApiError("invalid_field_value", message, param=name)
    return value
