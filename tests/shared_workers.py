"""Several mockglot workers sharing one Redis, for the shared-state tests (the fixtures `redis` and `pair` are in
conftest)."""

from __future__ import annotations

from typing import Any

from mockglot.settings import Settings
from mockglot.testing.server import ServerThread


def workers(url: str, n: int = 2, **settings: Any) -> list[ServerThread]:
    """`n` real uvicorn servers in threads, each a worker sharing the Redis at `url`."""
    return [ServerThread(Settings(port=0, state=url, output_pace="instant", **settings)).start() for _ in range(n)]


def on(server_url: str, session: dict[str, Any]) -> dict[str, Any]:
    """The session with its stream URL on `server_url` (a worker's own URL, as a balancer would route it)."""
    path = session["stream"]["url"].split("/v1/", 1)[1]
    ws = "ws" + server_url.removeprefix("http")
    return {**session, "stream": {**session["stream"], "url": f"{ws}/v1/{path}"}}
