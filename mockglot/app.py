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

from mockglot.api import agents, analyses, dial, recordings, sessions, stream
from mockglot.api.endpoint import Endpoint, route
from mockglot.control import faults, keys, requests, scenarios, system, webhooks
from mockglot.control import sessions as control_sessions
from mockglot.control.endpoint import control_route
from mockglot.control.middleware import InstrumentationMiddleware
from mockglot.engines.hub import StreamHub
from mockglot.http import RequestIdMiddleware, http_exception, json_response, unhandled_exception
from mockglot.openapi import document
from mockglot.settings import Settings
from mockglot.state.server import ServerState

PUBLIC_ENDPOINTS: list[Endpoint] = [
    *sessions.ENDPOINTS,
    *dial.ENDPOINTS,
    *recordings.ENDPOINTS,
    *analyses.ENDPOINTS,
    *agents.ENDPOINTS,
]
CONTROL_ENDPOINTS: list[Endpoint] = [
    *system.ENDPOINTS,
    *control_sessions.ENDPOINTS,
    *requests.ENDPOINTS,
    *faults.ENDPOINTS,
    *scenarios.ENDPOINTS,
    *keys.ENDPOINTS,
    *webhooks.ENDPOINTS,
]
SWEEP_INTERVAL_SECONDS = 1.0


def create_app(settings: Settings | None = None, state: ServerState | None = None) -> Starlette:
    settings = settings or Settings()
    state = state or ServerState(settings)
    hub = StreamHub(state, state.scenarios)
    public_doc = msgspec.json.encode(document("Kallglot API (mockglot)", PUBLIC_ENDPOINTS))
    control_doc = msgspec.json.encode(document("mockglot control plane", CONTROL_ENDPOINTS, security=False))

    def serve_document(content: bytes) -> Route:
        async def endpoint(request: Request) -> Response:
            return json_response(200, content)

        return endpoint  # type: ignore[return-value]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async def sweep_forever() -> None:
            while True:
                await asyncio.sleep(SWEEP_INTERVAL_SECONDS)
                state.sweep()

        sweeper = asyncio.create_task(sweep_forever())
        state.webhooks.start()
        try:
            yield
        finally:
            sweeper.cancel()
            await state.webhooks.stop()

    routes = [
        *(route(endpoint, state) for endpoint in PUBLIC_ENDPOINTS),
        WebSocketRoute("/v1/sessions/{session_id}/connect", stream.connect),
        Route("/openapi.json", serve_document(public_doc), methods=["GET"]),
        *(control_route(endpoint, state, hub) for endpoint in CONTROL_ENDPOINTS),
        Route("/_mockglot/openapi.json", serve_document(control_doc), methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_exception, Exception: unhandled_exception},
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False  # `/v1/sessions/` is a 404 in the envelope, not a redirect
    app.state.mockglot = state
    app.state.hub = hub
    # Added last runs first: request IDs wrap the instrumentation (faults and the journal).
    app.add_middleware(InstrumentationMiddleware, state=state)
    app.add_middleware(RequestIdMiddleware, randomness=state.randomness, clock_ms=lambda: int(state.clock.now() * 1000))
    return app
