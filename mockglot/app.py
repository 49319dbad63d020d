"""`create_app(settings)`: the application, its routes and lifespan.

HTTP takes a short path of mockglot's own (`HttpApp`: one pass, one route table); WebSockets and the lifespan
are Starlette's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send

from mockglot import asyncapi
from mockglot.api import agents, analyses, dial, recordings, sessions, stream
from mockglot.api.endpoint import Endpoint, http_handler
from mockglot.control import contract, faults, keys, requests, scenarios, system, webhooks
from mockglot.control import sessions as control_sessions
from mockglot.control.endpoint import control_handler
from mockglot.engines.hub import StreamHub
from mockglot.http import Request, Response, response
from mockglot.http_app import HttpApp
from mockglot.inspector import events
from mockglot.inspector.events import EventStream
from mockglot.inspector.ui import Inspector
from mockglot.openapi import document
from mockglot.router import HttpHandler, Router
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
    *contract.ENDPOINTS,
]
SWEEP_INTERVAL_SECONDS = 1.0
INSPECTOR_PATHS = ("/_mockglot/events", "/_mockglot/ui")


class MockglotApp(Starlette):
    """HTTP goes straight to `HttpApp`, but for the inspector's (which streams, or serves pages); WebSockets and
    the lifespan take Starlette's own path."""

    def __init__(self, http: HttpApp, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.http = http

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith(INSPECTOR_PATHS):
            await self.http(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def serve_document(build: Callable[[], dict[str, Any]]) -> HttpHandler:
    """The document, built on the first request: msgspec's schema walk would cost every start ~60 ms."""
    content = functools.cache(lambda: msgspec.json.encode(build()))

    async def endpoint(request: Request) -> Response:
        return response(200, content())

    return endpoint


def create_app(settings: Settings | None = None, state: ServerState | None = None) -> MockglotApp:
    settings = settings or Settings()
    state = state or ServerState(settings)
    hub = StreamHub(state, state.scenarios)
    router = Router()
    for endpoint in PUBLIC_ENDPOINTS:
        router.add(endpoint.method, endpoint.path, http_handler(endpoint, state))
    for endpoint in CONTROL_ENDPOINTS:
        router.add(endpoint.method, endpoint.path, control_handler(endpoint, state, hub))
    router.add("GET", "/openapi.json", serve_document(lambda: document("Kallglot API (mockglot)", PUBLIC_ENDPOINTS)))

    def control_document() -> dict[str, Any]:
        control_doc = document("mockglot control plane", [*CONTROL_ENDPOINTS, events.ENDPOINT], security=False)
        control_doc["paths"][events.ENDPOINT.path]["get"]["description"] = events.DESCRIPTION
        return control_doc

    router.add("GET", "/_mockglot/openapi.json", serve_document(control_document))
    router.add("GET", "/_mockglot/asyncapi.json", serve_document(asyncapi.document))  # the stream protocol

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

    app = MockglotApp(
        HttpApp(state, router),
        routes=[
            WebSocketRoute("/v1/sessions/{session_id}/connect", stream.connect),
            Route("/_mockglot/events", EventStream(state)),
            Mount("/_mockglot/ui", Inspector(state)),
            Route("/_mockglot/ui", Inspector(state)),
        ],
        lifespan=lifespan,
    )
    app.state.mockglot = state
    app.state.hub = hub
    return app
