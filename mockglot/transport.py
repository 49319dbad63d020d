"""How mockglot runs under uvicorn: the one place that builds its `uvicorn.Config`.

uvicorn is the transport; a few of its defaults do not suit a server that lives for weeks and faces bad input,
so mockglot's protocol classes adjust them:

- Writes: a connection's writes (HTTP responses, and WebSocket frames after the upgrade) are gathered until
  the event loop's turn has run and leave together (`mockglot.coalesce`): one write a response, and fewer
  wake-ups of clients waiting on several connections.
- HTTP: at most `max_connections` open sockets (past it a new socket is closed at once, with a warning), and a
  socket that has not sent a complete request head within `header_timeout` seconds is closed (uvicorn itself
  only times out idle keep-alive sockets between requests). Open sockets and the limit are in health. On
  shutdown a response still streaming (the inspector's events) is ended at once.
- WebSocket: a text frame that is not UTF-8 reaches the stream as `invalid_utf8` (it answers with a
  `session.error` and goes on) instead of uvicorn's 1007 close with a traceback; on shutdown (SIGTERM) the
  stream is told first, so it can send `session.ended` (`server_shutdown`), or with shared state a
  `session.error` and close 1012, before the socket closes.
- Logs: stream tokens and API keys in logged URLs are redacted (`mockglot.logs.RedactSecrets`).
- Workers (`--workers N`): uvicorn's own supervisor (`uvicorn.supervisors.Multiprocess`) runs N processes on the
  socket the parent bound, and replaces one that dies. A worker is a real mockglot server: it receives the
  settings alone (`WorkerConfig` pickles to them) and builds its own app and `uvicorn_config`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
import sys
import time
from typing import Any

import msgspec
import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.supervisors import Multiprocess

from mockglot.coalesce import CoalescingTransport, TurnFlusher
from mockglot.logs import RedactSecrets
from mockglot.settings import Settings

log = logging.getLogger("mockglot.transport")

WS_MAX_BYTES = 1024 * 1024  # the transport's limit: a bigger message closes the socket with 1009
SHUTDOWN_GRACE_SECONDS = 2.0  # how long a stream has to say `session.ended` before uvicorn closes it with 1012
GRACEFUL_SHUTDOWN_SECONDS = 5  # then uvicorn stops waiting for connections and exits
KEEP_ALIVE_SECONDS = 5
FD_RESERVE = 64  # descriptors kept free for files, logs and outgoing webhook connections
LIMIT_WARNING_EVERY_SECONDS = 10.0

# What `websocket.receive` carries for the stream besides ASGI's `text` / `bytes`.
INVALID_UTF8 = "mockglot.invalid_utf8"  # the decoder's complaint; `bytes` holds the frame
SHUTDOWN = "mockglot.shutdown"


def default_max_connections() -> int:
    """1,000, or fewer when the process may open fewer files."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1000 if soft == resource.RLIM_INFINITY else max(16, min(1000, soft - FD_RESERVE))


class ConnectionGauge:
    """Open sockets (HTTP and WebSocket) as uvicorn counts them, and the limit; read by health."""

    def __init__(self, limit: int, header_timeout: float) -> None:
        self.limit = limit
        self.header_timeout = header_timeout
        self._connections: set[Any] = set()
        self._warned_at = float("-inf")

    @property
    def open(self) -> int:
        return len(self._connections)

    def bind(self, connections: set[Any]) -> None:
        self._connections = connections

    def refuse(self) -> bool:
        """True when a new socket is one too many (and say so in the log, now and then)."""
        if len(self._connections) < self.limit:
            return False
        now = time.monotonic()
        if now - self._warned_at >= LIMIT_WARNING_EVERY_SECONDS:
            self._warned_at = now
            log.warning(
                "%d connections open, the limit (--max-connections): closing new connections until some end",
                self.limit,
            )
        return True


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, with the connection limit, a deadline for each request head, and writes gathered
    per loop turn."""

    gauge: ConnectionGauge
    flusher: TurnFlusher

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gauge.bind(self.connections)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        refuse = self.gauge.refuse()
        super().connection_made(CoalescingTransport(transport, self.flusher))
        if refuse:
            transport.close()
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        cycle = self.cycle
        if cycle is not None and cycle.response_started and not cycle.response_complete:
            # A response still streaming (the inspector's events) would hold the shutdown up: end its body
            # cleanly and close; the app sees the client go.
            if cycle.chunked_encoding:
                self.transport.write(b"0\r\n\r\n")
            self.transport.close()
            return
        super().shutdown()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._disarm_head_timer()
        super().on_headers_complete()

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.gauge.header_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol; bad UTF-8 and shutdown go to the stream instead of closing the socket."""

    def send_receive_event_to_app(self) -> None:
        if self.curr_msg_data_type == "text" and not self.close_sent:
            data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
            try:
                data.decode()
            except UnicodeDecodeError as exc:
                self.frames = []
                complaint = f"{exc.reason} at byte {exc.start}"
                event = {"type": "websocket.receive", "bytes": bytes(data), INVALID_UTF8: complaint}
                self.queue.put_nowait(event)  # type: ignore[arg-type]
                if not self.read_paused:
                    self.read_paused = True
                    self.transport.pause_reading()
                return
        super().send_receive_event_to_app()

    def shutdown(self) -> None:
        live = self.handshake_complete and self.initial_response is None and not self.close_sent
        if not live or self.disconnected:
            super().shutdown()
            return
        self.queue.put_nowait({"type": "websocket.receive", SHUTDOWN: True})  # type: ignore[arg-type]
        self.loop.call_later(SHUTDOWN_GRACE_SECONDS, self._shutdown_now)

    def _shutdown_now(self) -> None:
        if not self.disconnected and not self.transport.is_closing():
            super().shutdown()


def uvicorn_config(app: Any, settings: Settings, **options: Any) -> uvicorn.Config:
    """The Config every mockglot server runs with (`mockglot serve`, the pytest plugin's thread). Any ASGI app
    runs under it: the benches serve their baselines the same way."""
    limit = settings.max_connections or default_max_connections()
    gauge = ConnectionGauge(limit, settings.header_timeout)
    if (state := getattr(getattr(app, "state", None), "mockglot", None)) is not None:
        state.connections = gauge
    http = type("MockglotHttpProtocol", (HttpProtocol,), {"gauge": gauge, "flusher": TurnFlusher()})
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
    return uvicorn.Config(
        app,
        http=http,
        ws=WebSocketProtocol,
        ws_max_size=WS_MAX_BYTES,
        ws_ping_interval=None,
        ws_per_message_deflate=False,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        lifespan="on",
        **options,
    )


class WorkerConfig(uvicorn.Config):
    """The supervisor's Config for `--workers N`. The parent uses it as is (the number of workers, logging, the
    health-check timeout); each worker gets it through a pickle, which carries only the settings and options
    and rebuilds it there as a full mockglot Config (`worker_config`): an app, its protocol classes and its
    connection gauge belong to one process."""

    def __init__(self, settings: Settings, **options: Any) -> None:
        super().__init__(_parent_has_no_app, workers=settings.workers, **options)
        self.settings = settings
        self.options = options

    def __reduce__(self) -> tuple[Any, ...]:
        return (worker_config, (msgspec.json.encode(self.settings), self.options))


def _parent_has_no_app(scope: Any, receive: Any, send: Any) -> None:
    raise RuntimeError("the supervisor serves nothing itself; its workers build the app")  # pragma: no cover


def worker_config(settings_json: bytes, options: dict[str, Any]) -> uvicorn.Config:
    """In a new worker process: the app built from the parent's settings, under mockglot's Config. The parent
    built one from the same settings before it bound the socket, so a failure here is rare (a file changed
    since); it ends the worker with uvicorn's startup-failure code, which stops the supervisor instead of
    restarting the worker forever."""
    from mockglot.app import create_app  # the app imports this module

    settings = msgspec.json.decode(settings_json, type=Settings)
    try:
        app = create_app(settings)
    except Exception as exc:  # anything: a traceback here would be repeated by every restart
        print(f"mockglot: worker {os.getpid()} cannot start: {exc}", file=sys.stderr, flush=True)
        sys.exit(STARTUP_FAILURE)
    return uvicorn_config(app, settings, **options)


def run_workers(settings: Settings, sock: socket.socket, **options: Any) -> int:
    """Serve `sock` from `settings.workers` processes until SIGTERM or SIGINT stops them all (0), or one fails
    to start (1: it would fail the same way on every restart). A worker that dies is replaced."""
    supervisor = Multiprocess(WorkerConfig(settings, **options), sockets=[sock])
    supervisor.run()
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        print("mockglot: a worker failed to start (see above); stopped the others", file=sys.stderr, flush=True)
        return 1
    return 0
