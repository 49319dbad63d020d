"""`create_app(settings)`: the Starlette application, its routes, middleware and lifespan."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute

from mockglot.api import sessions, stream
from mockglot.api.endpoint import Endpoint, route
from mockglot.engines.hub import StreamHub
from mockglot.http import RequestIdMiddleware, http_exception, json_response, unhandled_exception
from mockglot.openapi import document
from mockglot.settings import Settings
from mockglot.state.server import ServerState

PUBLIC_ENDPOINTS: list[Endpoint] = [*sessions.ENDPOINTS]
SWEEP_INTERVAL_SECONDS = 1.0


def create_app(settings: Settings | None = None, state: ServerState | None = None) -> Starlette:
    settings = settings or Settings()
    state = state or ServerState(settings)
    openapi = msgspec.json.encode(document("Kallglot API (mockglot)", PUBLIC_ENDPOINTS))

    async def openapi_json(request: Request) -> Response:
        return json_response(200, openapi)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async def sweep_forever() -> None:
            while True:
                await asyncio.sleep(SWEEP_INTERVAL_SECONDS)
                state.sessions.sweep()

        sweeper = asyncio.create_task(sweep_forever())
        try:
            yield
        finally:
            sweeper.cancel()

    routes = [route(endpoint, state) for endpoint in PUBLIC_ENDPOINTS]
    routes.append(Route("/openapi.json", openapi_json, methods=["GET"]))
    routes.append(WebSocketRoute("/v1/sessions/{session_id}/connect", stream.connect))
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_exception, Exception: unhandled_exception},
        lifespan=lifespan,
    )
    app.state.mockglot = state
    app.state.hub = StreamHub(state, state.scenarios)
    app.add_middleware(RequestIdMiddleware, randomness=state.randomness, clock_ms=lambda: int(state.clock.now() * 1000))
    return app
