"""How every control-plane endpoint runs: the optional control token, strict body validation, the envelope.

Areas declare `Endpoint` values like the public API does; `scope` is unused here.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any, TypeVar

from mockglot import validation
from mockglot.api.endpoint import Endpoint, Reply
from mockglot.errors import ApiError
from mockglot.http import JSON, Request, Response, error_response, raw_headers, response
from mockglot.inspector import auth as inspector_auth
from mockglot.router import HttpHandler
from mockglot.wire import encode

T = TypeVar("T")
OPEN_PATHS = ("/_mockglot/health",)  # a container's health check needs no token


@dataclass(slots=True)
class ControlContext:
    state: Any  # ServerState
    hub: Any  # StreamHub
    request: Request
    body: Any

    def path(self, name: str) -> str:
        return self.request.path_params[name]

    def query(self, name: str, default: str | None = None) -> str | None:
        return self.request.query(name, default)

    def parse(self, type_: type[T]) -> T:
        value, _ = validation.convert(self.body or {}, type_, strict=True)
        return value


def check_token(request: Request, token: str | None) -> None:
    if token is None or request.path in OPEN_PATHS:
        return
    scheme, _, presented = (request.header(b"authorization") or "").partition(" ")
    bearer_ok = scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode())
    if not bearer_ok and not inspector_auth.signed_in(request, token):
        raise ApiError(
            "invalid_api_key",
            "The control plane is protected: send `Authorization: Bearer <control token>` (the server's "
            "--control-token).",
        )


def control_handler(endpoint: Endpoint, state: Any, hub: Any) -> HttpHandler:
    async def run(request: Request) -> Response:
        try:
            check_token(request, state.settings.control_token)
            body = request.json(required=endpoint.body_required) if endpoint.method == "POST" else None
            reply: Reply = await endpoint.handler(ControlContext(state, hub, request, body))  # type: ignore[arg-type]
        except ApiError as exc:
            return error_response(exc, request.id)
        content = reply.body if reply.media_type else encode(reply.body)
        return response(reply.status, content, reply.media_type or JSON, raw_headers(reply.headers or {}))

    return run


def query_float(ctx: ControlContext, name: str, default: float, low: float, high: float) -> float:
    raw = ctx.query(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ApiError("invalid_field_value", f"`{name}` must be a number, not {raw!r}.", param=name) from None
    if not low <= value <= high:
        raise ApiError("invalid_field_value", f"`{name}` must be between {low:g} and {high:g}.", param=name)
    return value
