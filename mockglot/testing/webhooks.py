"""A real local webhook receiver for tests: records every request and answers as told (a status, a hang, N
failures). It is a threading `http.server` on 127.0.0.1 with a free port, so it works beside any event loop.

    with WebhookReceiver() as receiver:
        receiver.fail(2)                     # the next two requests get 500, then 200 again
        ... register receiver.url, cause events ...
        first, second = receiver.wait(2)     # blocks until two requests have arrived
        first.verify("whsec_...")            # raises WebhookSignatureError if the signature is wrong

`webhook_receiver` is the same as a pytest fixture.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgspec
import pytest

from mockglot.webhooks import SIGNATURE_HEADER, verify

MAX_HANG_SECONDS = 120.0  # a hang nobody releases still ends, so a forgotten release cannot wedge a test run
HANG = -1  # the planned "status" of a request that is held until release()


@dataclass(frozen=True, slots=True)
class ReceivedWebhook:
    method: str
    path: str
    headers: dict[str, str]  # names lowercased
    body: bytes  # raw, as received: what a signature covers
    received_at: float

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        return msgspec.json.decode(self.body)

    def verify(self, secret: str, **options: Any) -> None:
        """`mockglot.webhooks.verify` on this request; `options`: tolerance, now."""
        verify(self.body, self.header(SIGNATURE_HEADER), secret, **options)


class WebhookReceiver:
    def __init__(self, host: str = "127.0.0.1", path: str = "/webhooks") -> None:
        self._lock = threading.Condition()
        self._received: list[ReceivedWebhook] = []
        self._plan: deque[int] = deque()  # answers for the next requests, before the default
        self._default = 200
        self._released = threading.Event()
        self._server = ThreadingHTTPServer((host, 0), _handler(self))  # daemon threads: a hang never blocks exit
        self._thread: threading.Thread | None = None
        self.url = f"http://{host}:{self._server.server_port}{path}"

    # --- what to answer ----------------------------------------------------------------------------------

    def respond(self, status: int) -> None:
        """Answer every request from now on with `status` (after any planned answers)."""
        with self._lock:
            self._default = status

    def fail(self, times: int, status: int = 500) -> None:
        """Answer the next `times` requests with `status`, then go back to the default."""
        with self._lock:
            self._plan.extend([status] * times)

    def hang(self, times: int | None = None) -> None:
        """Hold requests without answering until `release()`: the next `times`, or all from now on (None)."""
        with self._lock:
            self._released.clear()
            if times is None:
                self._default = HANG
            else:
                self._plan.extend([HANG] * times)

    def release(self) -> None:
        """Let every held request answer 200, and stop holding new ones."""
        with self._lock:
            if self._default == HANG:
                self._default = 200
            self._plan = deque(s for s in self._plan if s != HANG)
            self._released.set()

    def _next_answer(self) -> int:
        with self._lock:
            return self._plan.popleft() if self._plan else self._default

    # --- what arrived ------------------------------------------------------------------------------------

    @property
    def requests(self) -> list[ReceivedWebhook]:
        with self._lock:
            return list(self._received)

    def events(self) -> list[Any]:
        """Every received body, decoded."""
        return [r.json() for r in self.requests]

    def wait(self, count: int, timeout: float = 10.0) -> list[ReceivedWebhook]:
        """Block until at least `count` requests have arrived (a held one counts); all of them, in order."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._received) >= count, timeout):
                raise TimeoutError(f"expected {count} webhook requests within {timeout:g} s, got {len(self._received)}")
            return list(self._received)

    async def wait_async(self, count: int, timeout: float = 10.0) -> list[ReceivedWebhook]:
        """`wait` without blocking the calling event loop."""
        return await asyncio.to_thread(self.wait, count, timeout)

    def _record(self, request: ReceivedWebhook) -> None:
        with self._lock:
            self._received.append(request)
            self._lock.notify_all()

    # --- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> WebhookReceiver:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="webhook-receiver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _handler(receiver: WebhookReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length > 0 else b""
            receiver._record(
                ReceivedWebhook(
                    method=self.command,
                    path=self.path,
                    headers={name.lower(): value for name, value in self.headers.items()},
                    body=body,
                    received_at=time.time(),
                )
            )
            status = receiver._next_answer()
            if status == HANG:
                receiver._released.wait(MAX_HANG_SECONDS)
                status = 200
            try:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:  # the sender gave up waiting (its timeout): nothing to answer
                self.close_connection = True

        do_POST = do_PUT = do_GET = do_DELETE = do_PATCH = _serve

        def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read .requests instead
            pass

    return Handler


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """A running `WebhookReceiver`, stopped after the test."""
    with WebhookReceiver() as receiver:
        yield receiver
