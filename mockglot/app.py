"""`create_app(settings)`: the application, its routes, middleware and lifespan.

A Starlette application: the endpoint tables become routes (`mockglot.routing`), the request ID, header limits
and the instrumentation of the public API are one pure ASGI middleware, and the error envelope comes from
exception handlers (`mockglot.middleware`). Middleware a user adds with `app.add_middleware` sees every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

from mockglot.api import agents, analyses, dial, recordings, sessions, stream
from mockglot.api.endpoint import Context, PublicEndpoint
from mockglot.control import contract, faults, keys, requests, scenarios, system, webhooks
from mockglot.control import sessions as control_sessions
from mockglot.control.endpoint import ControlContext, ControlEndpoint
from mockglot.engines.hub import StreamHub
from mockglot.errors import ApiError
from mockglot.http import Endpoint, Request, Response, response
from mockglot.inspector import events
from mockglot.inspector.events import EventStream
from mockglot.inspector.ui import Inspector
from mockglot.middleware import EXCEPTION_HANDLERS, EdgeMiddleware
from mockglot.routing import IndexedRouter, endpoint_routes
from mockglot.settings import Settings
from mockglot.state.server import ServerState
from mockglot.webhooks.dispatcher import Dispatcher

if TYPE_CHECKING:
    from mockglot.shared.coordinator import RedisCoordinator

log = logging.getLogger("mockglot.app")

PUBLIC_ENDPOINTS: list[Endpoint[Context]] = [
    *sessions.ENDPOINTS,
    *dial.ENDPOINTS,
    *recordings.ENDPOINTS,
    *analyses.ENDPOINTS,
    *agents.ENDPOINTS,
]
CONTROL_ENDPOINTS: list[Endpoint[ControlContext]] = [
    *system.ENDPOINTS,
    *control_sessions.ENDPOINTS,
    *requests.ENDPOINTS,
    *faults.ENDPOINTS,
    *scenarios.ENDPOINTS,
    *keys.ENDPOINTS,
    *webhooks.ENDPOINTS,
    *contract.ENDPOINTS,
]
SWEEP_INTERVAL_SECONDS = 1.0


def serve_document(build: Callable[[], dict[str, Any]]) -> Callable[[Request], Awaitable[Response]]:
    """The document, built on the first request: msgspec's schema walk would cost every start ~60 ms."""
    content = functools.cache(lambda: msgspec.json.encode(build()))

    async def endpoint(request: Request) -> Response:
        return response(200, content())

    return endpoint


def stream_document() -> dict[str, Any]:
    from mockglot import asyncapi

    return asyncapi.document()


def create_app(settings: Settings | None = None, state: ServerState | None = None) -> Starlette:
    settings = settings or Settings()
    state = state or ServerState(settings)
    coordinator = _shared(settings, state)
    hub = StreamHub(state, state.scenarios)
    webhooks = Dispatcher(state.settings, state.clock, state.events, state.webhooks, state.feed)  # lifespan starts it

    def public_document() -> dict[str, Any]:
        from mockglot.openapi import document

        return document("Kallglot API (mockglot)", PUBLIC_ENDPOINTS)

    def control_document() -> dict[str, Any]:
        from mockglot.openapi import document

        control_doc = document("mockglot control plane", [*CONTROL_ENDPOINTS, events.ENDPOINT], security=False)
        control_doc["paths"][events.ENDPOINT.path]["get"]["description"] = events.DESCRIPTION
        return control_doc

    inspector = Inspector(state)
    routes: list[BaseRoute] = [
        *endpoint_routes(PUBLIC_ENDPOINTS, lambda endpoint: PublicEndpoint(endpoint, state)),
        *endpoint_routes(CONTROL_ENDPOINTS, lambda endpoint: ControlEndpoint(endpoint, state, webhooks)),
        Route("/openapi.json", serve_document(public_document)),
        Route("/_mockglot/openapi.json", serve_document(control_document)),
        Route("/_mockglot/asyncapi.json", serve_document(stream_document)),  # the stream protocol
        WebSocketRoute("/v1/sessions/{session_id}/connect", stream.connect),
        Route("/_mockglot/events", EventStream(state)),
        Route("/_mockglot/ui", inspector),
        Mount("/_mockglot/ui", inspector),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async def sweep_forever() -> None:
            while True:
                await asyncio.sleep(SWEEP_INTERVAL_SECONDS)
                try:
                    async with state.coordinator.hold_unless_busy() as held:
                        if held:  # else the worker holding the state sweeps
                            state.sweep()
                except ApiError as exc:  # the shared state is away; the next sweep tries again
                    log.warning("sweep skipped: %s", exc.message)

        if coordinator is not None:
            await coordinator.start()
        sweeper = asyncio.create_task(sweep_forever())
        webhooks.start()
        try:
            yield
        finally:
            sweeper.cancel()
            await webhooks.stop()
            if coordinator is not None:
                await coordinator.stop()

    router = IndexedRouter(routes, lifespan=lifespan)
    middleware = [Middleware(EdgeMiddleware, state=state, router=router)]
    if coordinator is not None:  # around everything that reads or changes the state
        from mockglot.shared.middleware import HoldSharedState

        middleware.insert(0, Middleware(HoldSharedState, coordinator=coordinator))
    app = Starlette(
        middleware=middleware,
        exception_handlers=dict(EXCEPTION_HANDLERS),
    )
    app.router = router
    app.state.mockglot = state
    app.state.hub = hub
    app.state.webhooks = webhooks
    if coordinator is not None:
        coordinator.app = app
    return app


def _shared(settings: Settings, state: ServerState) -> RedisCoordinator | None:
    """With `--state redis://...`: the coordinator through which this worker shares the state."""
    url: str = getattr(settings, "state", "memory")
    if url == "memory":
        return None
    from mockglot.shared.coordinator import RedisCoordinator

    coordinator = RedisCoordinator(url, state)
    state.share(coordinator, coordinator.worker, coordinator.alive)
    return coordinator
