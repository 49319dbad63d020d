"""The route table every HTTP request goes through (Starlette's router, indexed): what matches, what is a 405,
what is a 404, and that routes and middleware added the Starlette way work."""

from __future__ import annotations

import json

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from mockglot.http import Endpoint, Reply
from mockglot.routing import IndexedRouter, endpoint_routes
from mockglot.settings import Settings
from mockglot.testing.server import ServerThread


def named(name: str) -> Endpoint[None]:
    async def handler(ctx: None) -> Reply:
        return Reply(200, name)

    return Endpoint("GET", "/", handler, "", name)


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"route": request.scope["route"].path, "params": request.path_params})


def table() -> Starlette:
    routes = [
        Route("/v1/sessions", echo, methods=["POST"]),
        Route("/v1/sessions/{session_id}", echo, methods=["GET"]),
        Route("/v1/sessions/export", echo, methods=["GET"]),  # after the template: the template wins, as in Starlette
        Route("/v1/sessions/{session_id}/end", echo, methods=["POST"]),
        Route("/v1/recordings/{recording_id}/audio", echo, methods=["GET"]),
    ]
    app = Starlette()
    app.router = IndexedRouter(routes)
    return app


@pytest.fixture
async def client():
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=table()), base_url="http://t") as client:
        yield client


async def test_a_fixed_path_and_a_template_resolve_with_their_parameters(client):
    assert (await client.post("/v1/sessions")).json() == {"route": "/v1/sessions", "params": {}}
    answer = (await client.post("/v1/sessions/sess_1/end")).json()
    assert answer == {"route": "/v1/sessions/{session_id}/end", "params": {"session_id": "sess_1"}}
    assert (await client.get("/v1/recordings/rec_9/audio")).json()["params"] == {"recording_id": "rec_9"}


async def test_routes_are_tried_in_table_order(client):
    assert (await client.get("/v1/sessions/export")).json()["route"] == "/v1/sessions/{session_id}"


async def test_a_get_route_answers_head(client):
    assert (await client.head("/v1/sessions/sess_1")).status_code == 200


async def test_a_known_path_with_another_method_is_a_405(client):
    response = await client.delete("/v1/sessions/sess_1")
    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD"}


@pytest.mark.parametrize(
    "path", ["/v1/sessions/", "/v1/sessions//end", "/v1/session/sess_1", "/v1/sessions/sess_1/end/", "/v1", "/"]
)
async def test_near_misses_are_not_routes(client, path):
    assert (await client.get(path)).status_code == 404
    assert (await client.post(path)).status_code == 404


async def test_a_route_added_later_is_found():
    app = table()
    app.add_route("/late", lambda request: PlainTextResponse("late"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.get("/late")).text == "late"
        assert (await client.post("/v1/sessions")).status_code == 200


def test_a_route_added_twice_is_a_mistake():
    with pytest.raises(ValueError, match="two routes for GET /"):
        endpoint_routes([named("one"), named("two")], lambda endpoint: PlainTextResponse(endpoint.summary))


# --- the whole app: Starlette middleware sees HTTP and WebSockets alike -----------------------------------


class OriginCheck:
    """What a user might add for WebSockets, which CORSMiddleware leaves alone: refuse other origins' pages."""

    def __init__(self, app, allowed: str) -> None:
        self.app, self.allowed = app, allowed

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and dict(scope["headers"]).get(b"origin", b"").decode() != self.allowed:
            await send({"type": "websocket.close", "code": 1008})
            return
        await self.app(scope, receive, send)


def test_middleware_added_by_a_user_applies_to_rest_and_the_stream(api_key):
    server = ServerThread(Settings(port=0))
    server.app.add_middleware(CORSMiddleware, allow_origins=["https://app.example"], allow_methods=["*"])
    server.app.add_middleware(OriginCheck, allowed="https://app.example")
    with server, httpx.Client(base_url=server.base_url) as client:
        headers = {"Authorization": f"Bearer {api_key}", "Origin": "https://app.example"}
        body = {"mode": "bidirectional_translation", "source_language": "de", "target_language": "en"}
        created = client.post("/v1/sessions", json=body, headers=headers)
        assert created.status_code == 201
        assert created.headers["access-control-allow-origin"] == "https://app.example"
        assert created.headers["x-request-id"].startswith("req_")
        missing = client.get("/v1/nowhere", headers=headers)
        assert (missing.status_code, missing.headers["access-control-allow-origin"]) == (404, "https://app.example")
        preflight = client.options(
            "/v1/sessions", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        )
        assert preflight.status_code == 400  # CORSMiddleware refuses an origin it does not allow
        url = created.json()["stream"]["url"] + "?token=" + created.json()["stream"]["token"]
        with pytest.raises(InvalidStatus):  # refused before the handshake completes
            connect(url, origin="https://evil.example").close()
        with connect(url, origin="https://app.example") as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "session.ready"


async def test_endpoint_table_routes_match_as_starlette_routes_do():
    """`endpoint_routes` compares segments instead of a regex: the same matches, near misses and 405s."""

    def row(method: str, path: str) -> Endpoint[None]:
        return Endpoint(method, path, named(path).handler, "", path)

    rows = [row("POST", "/v1/sessions"), row("GET", "/v1/sessions/{session_id}")]
    rows += [row("DELETE", "/v1/sessions/{session_id}"), row("POST", "/v1/sessions/{session_id}/end")]

    def build(endpoint: Endpoint[None]) -> PlainTextResponse:
        return PlainTextResponse(f"{endpoint.method} {endpoint.path}")

    app = Starlette()
    app.router = IndexedRouter(endpoint_routes(rows, build))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.get("/v1/sessions/sess_1")).text == "GET /v1/sessions/{session_id}"
        assert (await client.delete("/v1/sessions/sess_1")).text == "DELETE /v1/sessions/{session_id}"
        assert (await client.head("/v1/sessions/sess_1")).status_code == 200
        assert (await client.post("/v1/sessions/sess_1/end")).text == "POST /v1/sessions/{session_id}/end"
        not_allowed = await client.put("/v1/sessions/sess_1")
        assert not_allowed.status_code == 405
        assert set(not_allowed.headers["allow"].split(", ")) == {"GET", "HEAD", "DELETE"}
        for path in ["/v1/sessions/", "/v1/sessions//end", "/v1/session/sess_1", "/v1/sessions/sess_1/end/", "/v1"]:
            assert (await client.get(path)).status_code == 404, path
