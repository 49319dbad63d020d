"""How every control-plane endpoint runs: the optional control token, strict body validation, the envelope.

Areas declare `Endpoint` values like the public API does; `scope` is unused here.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mockglot import validation
from mockglot.api.endpoint import Endpoint, Reply
from mockglot.errors import ApiError
from mockglot.http import error_response, json_response, read_json_body, request_id
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
        return self.request.query_params.get(name, default)

    def parse(self, type_: type[T]) -> T:
        value, _ = validation.convert(self.body or {}, type_, strict=True)
        return value


def check_token(request: Request, token: str | None) -> None:
    if token is None or request.url.path in OPEN_PATHS:
        return
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), token.encode()):
        raise ApiError(
            "invalid_api_key",
            "The control plane is protected: send `Authorization: Bearer <control token>` (the server's "
            "--control-token).",
        )


def control_route(endpoint: Endpoint, state: Any, hub: Any) -> Route:
    async def run(request: Request) -> Response:
        try:
            check_token(request, state.settings.control_token)
            body = await read_json_body(request, required=endpoint.body_required) if endpoint.method == "POST" else None
            reply: Reply = await endpoint.handler(ControlContext(state, hub, request, body))  # type: ignore[arg-type]
        except ApiError as exc:
            return error_response(exc, request_id(request))
        if reply.media_type:
            return Response(reply.body, status_code=reply.status, media_type=reply.media_type, headers=reply.headers)
        return json_response(reply.status, encode(reply.body), reply.headers)

    return Route(endpoint.path, run, methods=[endpoint.method], name=endpoint.summary)


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
