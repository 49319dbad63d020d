"""An ASGI app (the real mockglot app, or any other) under a real uvicorn server, in a background thread."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Self, TypeVar

import uvicorn

from mockglot.app import create_app
from mockglot.settings import Settings
from mockglot.state.server import ServerState
from mockglot.transport import uvicorn_config

if TYPE_CHECKING:
    from starlette.types import ASGIApp

T = TypeVar("T")


class AppThread:
    """Any ASGI app (a proxy, a stub upstream) under uvicorn in a thread on a free loopback port: starts on enter,
    stops on exit; `call()` runs a function on the server's event loop."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def _address(self) -> tuple[str, int]:
        return "127.0.0.1", 0

    def _bound(self, port: int) -> None:
        self.port = port

    def _config(self) -> uvicorn.Config:
        return uvicorn.Config(self.app, log_level="warning", ws_ping_interval=None, lifespan="on")

    def start(self) -> Self:
        # IPPROTO_TCP, not 0: only then does asyncio set TCP_NODELAY on accepted connections; without it every
        # response waited ~40 ms (its body behind its headers, for the client's delayed ACK)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(self._address())
        self._bound(sock.getsockname()[1])
        self._server = uvicorn.Server(self._config())
        started = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            loop.call_soon(started.set)
            loop.run_until_complete(self._server.serve(sockets=[sock]))  # type: ignore[union-attr]
            loop.close()

        self._thread = threading.Thread(target=run, name="mockglot-server", daemon=True)
        self._thread.start()
        started.wait(10)
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("mockglot server failed to start")
            threading.Event().wait(0.01)
        return self

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run `function` on the server's loop (state is not thread-safe) and return its result."""
        assert self._loop is not None

        async def invoke() -> T:
            return function(*args)

        return asyncio.run_coroutine_threadsafe(invoke(), self._loop).result(10)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ServerThread(AppThread):
    """The real mockglot app for `settings` (port 0: a free one), its state at hand in `.state`."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings(port=0)
        self.state = ServerState(self.settings)
        super().__init__(create_app(self.settings, self.state))

    def _address(self) -> tuple[str, int]:
        return self.settings.host, self.settings.port

    def _bound(self, port: int) -> None:
        self.port = self.settings.port = port  # so URLs built from settings name the real port

    def _config(self) -> uvicorn.Config:
        return uvicorn_config(self.app, self.settings, log_level="warning")
