"""Shared fixtures: the app in-process (fast, direct access to its state) and the real server in a thread.

- `app` / `state`: a fresh in-process app per test (default Settings) and its ServerState.
- `client`: an httpx.AsyncClient calling `app` in-process, authenticated with `api_key`.
- `make_app(**settings, keys=[...])`: an app with custom Settings; `keys` writes a keys file (configured mode).
- `make_client(app, key)`: another in-process client (key None: unauthenticated).
- `make_key(env)` / `api_key`: fresh open-mode keys, so every test is its own organization.
- `server` (session-scoped ServerThread) and `server_client` (httpx to it, authenticated with `api_key`).
- `redis_server` (session-scoped: a real redis-server on a free port, tests/redis_server.py; `.restart()` for
  fault tests, `.flush()` for a clean store) and `redis_url` (its URL).
"""

from __future__ import annotations

import itertools
import json
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from mockglot.app import create_app
from mockglot.settings import Settings
from mockglot.state.server import ServerState
from mockglot.testing.server import ServerThread
from tests import frame_schema
from tests.redis_server import RedisServer
from tests.shared_workers import workers

BASE_URL = "http://testserver"


@pytest.fixture(autouse=True)
def frames_match_the_asyncapi_document() -> Iterator[None]:
    """Every frame the server sends during a test validates against the AsyncAPI document (tests/frame_schema.py)."""
    frame_schema.watch()
    frame_schema.take()  # what a previous test's leftover streams sent is not this test's
    yield
    found = frame_schema.take()
    if found:
        pytest.fail(f"{len(found)} server frame(s) do not match the AsyncAPI document:\n" + "\n".join(found[:5]))


def new_key(environment: str = "test") -> str:
    return f"sk_{environment}_{secrets.token_hex(12)}"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def make_key() -> Callable[..., str]:
    """`make_key()` -> a fresh `sk_test_...`; `make_key("live")` -> `sk_live_...`."""
    return new_key


@pytest.fixture
def api_key() -> str:
    return new_key()


@pytest.fixture
def make_app(tmp_path) -> Callable[..., Starlette]:
    """`make_app(strict=True, rate_limit=2, seed=1, keys=[{"key": ..., "organization": ...}])`."""
    counter = itertools.count()

    def make(*, keys: list[dict[str, Any]] | None = None, **settings: Any) -> Starlette:
        if keys is not None:
            path = tmp_path / f"keys-{next(counter)}.json"
            path.write_text(json.dumps({"keys": keys}), encoding="utf-8")
            settings["keys"] = str(path)
        return create_app(Settings(**settings))

    return make


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    clients: list[httpx.AsyncClient] = []

    def make(app: Starlette, key: str | None = None, **kwargs: Any) -> httpx.AsyncClient:
        headers = {**(bearer(key) if key else {}), **kwargs.pop("headers", {})}
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL, headers=headers, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def app(make_app) -> Starlette:
    return make_app()


@pytest.fixture
def state(app) -> ServerState:
    return app.state.mockglot


@pytest.fixture
def client(app, api_key, make_client) -> httpx.AsyncClient:
    return make_client(app, api_key)


@pytest.fixture(scope="session")
def server() -> Iterator[ServerThread]:
    with ServerThread(Settings(port=0)) as running:
        yield running


@pytest.fixture
async def server_client(server, api_key) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, headers=bearer(api_key)) as client:
        yield client


@pytest.fixture(scope="module")
def live() -> Iterator[ServerThread]:
    """A real server of the test module's own, audio.output sent at once."""
    with ServerThread(Settings(port=0, output_pace="instant")) as running:
        yield running


@pytest.fixture
async def control(live: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    """A client for `live`'s control plane; the test's clock changes are undone after it."""
    async with httpx.AsyncClient(base_url=live.base_url) as client:
        yield client
        await client.post("/_mockglot/clock", json={"reset": True})


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    """A real redis-server for this test session (one per xdist worker), stopped at its end."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis(redis_server: RedisServer) -> Iterator[str]:
    """The session's Redis, emptied for this test: its URL."""
    redis_server.flush()
    yield redis_server.url


@pytest.fixture
def pair(redis: str) -> Iterator[list[ServerThread]]:
    """Two workers sharing an empty Redis (tests/shared_workers.py), stopped after the test."""
    servers = workers(redis)
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis: `redis://127.0.0.1:PORT/0` (a fault test that stops it starts it again, on the same
    port, before it ends: `redis_server.restart()`)."""
    return redis_server.url
