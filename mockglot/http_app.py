"""Every HTTP request in one pass: its request ID, the public API's instrumentation, the route, and the envelope
for what no route answers (404, 405) or what fails (500)."""

from __future__ import annotations

import logging

from starlette.types import Receive, Scope, Send

from mockglot.control.instrumentation import Instrumentation
from mockglot.errors import ApiError
from mockglot.http import Request, Response, error_response, read_body
from mockglot.router import Router
from mockglot.state.server import ServerState

log = logging.getLogger("mockglot")

PUBLIC_PREFIX = "/v1"


class HttpApp:
    def __init__(self, state: ServerState, router: Router) -> None:
        self.state = state
        self.router = router
        self.instrumentation = Instrumentation(state)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = self.state.randomness.new_id("req", "request", self.state.clock.now())
        request = Request(scope, request_id, await read_body(receive))
        try:
            if scope["path"].startswith(PUBLIC_PREFIX):
                response = await self.instrumentation(request, send, self.dispatch)
            else:
                response = await self.dispatch(request)
        except Exception:  # outside the handlers: the journal, a fault rule
            response = internal_error(request)
        if response is not None:
            await response.send(send, (b"x-request-id", request_id.encode()))

    async def dispatch(self, request: Request) -> Response:
        try:
            match = self.router.resolve(request.method, request.path)
            if match is None:
                return error_response(
                    ApiError(
                        "route_not_found",
                        f"No route {request.method} {request.path}. Every route is listed in /openapi.json "
                        "(a call starts with POST /v1/sessions).",
                    ),
                    request.id,
                )
            if match.handler is None:
                error = ApiError(
                    "method_not_allowed",
                    f"{request.method} is not allowed on {request.path}. See /openapi.json for the methods each "
                    "path takes.",
                )
                return error_response(error, request.id, [(b"allow", ", ".join(match.allowed).encode())])
            request.path_params = match.params
            return await match.handler(request)
        except Exception:
            return internal_error(request)


def internal_error(request: Request) -> Response:
    """A bug. It should never happen; when it does, it is an envelope and a log line, not a dropped socket."""
    log.exception("internal error on %s %s", request.method, request.path)
    error = ApiError("internal_error", "mockglot hit an internal error; this is a bug, please report it.")
    return error_response(error, request.id)
