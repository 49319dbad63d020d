"""`mockglot proxy`: the public API forwarded to an upstream Kallglot-compatible server, checked on the wire.

REST requests and responses pass through httpx; the stream passes through a WebSocket client, both directions.
Each request, response and frame is checked against the contract (`drift.py`); with `--record DIR` each
session is written as a recording (`recording.py`) that `mockglot serve --fixtures DIR` replays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Scope
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from mockglot import wire
from mockglot.api.stream import frame_error
from mockglot.errors import STREAM_CLOSE_CODES, ApiError
from mockglot.http import read_body
from mockglot.proxy import recording
from mockglot.proxy.drift import Difference, DriftReport
from mockglot.proxy.recording import RECORDING_FILE, Header, Recorder, write_atomic
from mockglot.wire import LANGUAGES, Language

log = logging.getLogger("mockglot.proxy")

MAX_OPEN_RECORDINGS = 1000  # sessions being recorded at once; the oldest not streaming is written and let go first
MAX_RELEASED_CLOCKS = 100_000  # written recordings whose time bases are kept, to go on exactly if they resume
UPSTREAM_TIMEOUT_SECONDS = 30.0
MAX_UPSTREAM_FRAME_BYTES = 16 * 1024 * 1024  # as uvicorn takes from the client: a bigger one closes the stream, 1009
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding",
    "upgrade", "host", "content-length", "content-encoding", "accept-encoding",
}  # fmt: skip
REPORT_PATH = "/_mockglot/proxy/report"
RECORDABLE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")  # a folder name that stays inside --record DIR


@dataclass(slots=True)
class ProxySettings:
    upstream: str  # e.g. https://api.kallglot.com or http://127.0.0.1:8081 (a trailing /v1 is dropped)
    record: Path | None = None
    strict: bool = False
    report_file: Path | None = None

    @property
    def base(self) -> str:
        return self.upstream.rstrip("/").removesuffix("/v1")


def session_of(path: str) -> str | None:
    parts = path.split("/")
    if len(parts) >= 4 and parts[1] == "v1" and parts[2] == "sessions" and parts[3]:
        return parts[3]
    return None


def envelope(exc: ApiError, request_id: str | None = None) -> Response:
    body = msgspec.json.encode(exc.body(request_id))
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    return Response(body, status_code=exc.status, media_type="application/json", headers=headers)


def strict_error(differences: list[Difference]) -> ApiError:
    shown = "; ".join(f"{d.kind}: {d.where}: {d.detail}" for d in differences[:5])
    return ApiError("internal_error", f"mockglot proxy (--strict): the exchange differs from the contract: {shown}")


class Proxy:
    def __init__(self, settings: ProxySettings) -> None:
        self.settings = settings
        self.report = DriftReport(settings.base, strict=settings.strict)
        self.recorders: OrderedDict[str, Recorder] = OrderedDict()  # in progress, or not yet written
        self.streaming: dict[str, int] = {}  # session id -> its open streams
        self.clocks: OrderedDict[str, tuple[float, float | None]] = OrderedDict()  # a released recording's time bases
        self.client: httpx.AsyncClient | None = None
        split = urlsplit(settings.base)
        self.ws_base = f"{'wss' if split.scheme == 'https' else 'ws'}://{split.netloc}"

    # --- REST --------------------------------------------------------------------------------------

    async def forward(self, request: Request) -> Response:
        started = time.perf_counter()
        method, path = request.method, request.url.path
        try:
            body = await read_body(request)  # mockglot's own limit: 413 past 1 MiB
        except ClientDisconnect:
            return Response(status_code=499)  # nobody is listening; nothing was forwarded
        except ApiError as exc:
            return envelope(exc)
        session_id = session_of(path)
        found = self.report.check_request(method, path, body, session_id)
        if found and self.settings.strict:
            return envelope(strict_error(found))
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        assert self.client is not None
        upstream_started = time.perf_counter()
        try:
            answer = await self.client.request(method, self.settings.base + _raw_target(request.scope),
                                               headers=headers, content=body)  # fmt: skip
        except httpx.InvalidURL as exc:
            return envelope(ApiError("invalid_request", f"The request's path cannot be forwarded: {exc}"))
        except httpx.HTTPError as exc:
            self.report.add("upstream_unavailable", f"{method} {path}", f"{type(exc).__name__}: {exc}", session_id)
            error = ApiError(
                "service_unavailable",
                f"The upstream {self.settings.base} did not answer ({type(exc).__name__}); the proxy forwarded "
                "nothing. Check that it is running and reachable.",
                retry_after=1,
            )
            return envelope(error)
        upstream_ms = (time.perf_counter() - upstream_started) * 1000
        content = answer.content
        content_type = answer.headers.get("content-type", "")
        decoded = _json(content) if content_type.startswith("application/json") else None
        if isinstance(decoded, dict) and isinstance(decoded.get("stream"), dict):
            decoded["stream"] = self._through_proxy(decoded["stream"], request)
            content = msgspec.json.encode(decoded)
        response_headers = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
        found = self.report.check_response(
            method, path, answer.status_code, content_type, answer.content, dict(answer.headers), session_id
        )
        if session_id is None and method == "POST" and path == "/v1/sessions" and isinstance(decoded, dict):
            session_id = decoded.get("id") if isinstance(decoded.get("id"), str) else None
        self._record_rest(session_id, method, path, request.url.query, answer.status_code, body, decoded)
        self.report.rest_latency.add((time.perf_counter() - started) * 1000 - upstream_ms)
        if found and self.settings.strict:
            return envelope(strict_error(found), answer.headers.get("x-request-id"))
        return Response(content, status_code=answer.status_code, headers=response_headers)

    def _through_proxy(self, stream: dict[str, Any], request: Request) -> dict[str, Any]:
        """The client connects to the proxy, which connects upstream with the same path and token."""
        url = stream.get("url")
        if isinstance(url, str):
            split = urlsplit(url)
            scheme = "wss" if request.url.scheme == "https" else "ws"
            stream = {**stream, "url": f"{scheme}://{request.url.netloc}{split.path}"}
        return stream

    def _record_rest(
        self, session_id: str | None, method: str, path: str, query: str, status: int, body: bytes, response: Any
    ) -> None:
        """A session's exchange goes into its recording; a path naming no session the upstream knows (a 404, a
        typo) starts none, so it makes no folder."""
        if self.settings.record is None or session_id is None or not recordable(session_id):
            return
        if session_id not in self.recorders and not self._on_disk(session_id) and not 200 <= status < 300:
            return
        recorder = self._recorder(session_id, response if method == "POST" and path == "/v1/sessions" else None)
        recorder.confirmed = True
        recorder.rest(time.time(), method, path, query, status, _json(body), response)
        if (path.endswith("/end") or path.endswith("/transcript")) and self._write(recorder):
            self._release(session_id)

    def _on_disk(self, session_id: str) -> bool:
        assert self.settings.record is not None
        return (self.settings.record / session_id / RECORDING_FILE).is_file()

    def _recorder(self, session_id: str, session: Any = None) -> Recorder:
        """The session's recording: in memory, or written and let go earlier (read back, so that what comes
        later is added to it rather than written over it), or a new one."""
        recorder = self.recorders.get(session_id)
        if recorder is None and self._on_disk(session_id):
            recorder = self._resume(session_id)
        if recorder is None:
            assert self.settings.record is not None
            session = session if isinstance(session, dict) else {}
            header = Header(
                upstream=self.settings.base,
                recorded_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                session_id=session_id,
                mode=_str(session.get("mode")),
                source_language=_language(session.get("source_language")),
                target_language=_language(session.get("target_language")),
            )
            recorder = Recorder(self.settings.record, header, time.time())
        self.recorders[session_id] = recorder
        self.recorders.move_to_end(session_id)
        while len(self.recorders) > MAX_OPEN_RECORDINGS:
            # The oldest whose stream is closed: one still streaming keeps adding to the recorder it holds, and a
            # copy read back from disk meanwhile would be written over it. Streams are bounded by the connections.
            oldest_id = next((held for held in self.recorders if held not in self.streaming), None)
            if oldest_id is None:
                break
            oldest = self.recorders.pop(oldest_id)
            self._write(oldest)
            self._keep_clock(oldest_id, oldest)
        return recorder

    def _resume(self, session_id: str) -> Recorder | None:
        assert self.settings.record is not None
        try:
            loaded = recording.load(self.settings.record / session_id)
        except recording.RecordingError as exc:
            log.error("cannot add to the recording of %s: %s", session_id, exc)
            return None
        return Recorder.resume(self.settings.record, loaded, *self.clocks.pop(session_id, (None, None)))

    def _release(self, session_id: str) -> None:
        """Let a written recording go from memory, unless its stream is open: a proxy that runs for weeks keeps
        only the sessions in progress, not the last thousand calls' audio."""
        recorder = self.recorders.get(session_id)
        if recorder is None or not recorder.confirmed or session_id in self.streaming:
            return
        del self.recorders[session_id]
        self._keep_clock(session_id, recorder)

    def _keep_clock(self, session_id: str, recorder: Recorder) -> None:
        self.clocks[session_id] = (recorder.started, recorder.stream_started)
        while len(self.clocks) > MAX_RELEASED_CLOCKS:
            self.clocks.popitem(last=False)

    def _write(self, recorder: Recorder) -> bool:
        """Write a confirmed recording; False when it is not on disk (then it stays in memory to try again)."""
        if not recorder.confirmed:  # a stream the upstream refused (an unknown session): nothing to replay
            return False
        try:
            recorder.write()
        except OSError as exc:
            log.error("cannot write the recording of %s: %s", recorder.recording.header.session_id, exc)
            return False
        return True

    # --- the stream --------------------------------------------------------------------------------

    async def stream(self, websocket: WebSocket) -> None:
        session_id = websocket.path_params["session_id"]
        target = self.ws_base + _raw_target(websocket.scope)
        headers = {"Authorization": websocket.headers["authorization"]} if "authorization" in websocket.headers else {}
        await websocket.accept()
        try:
            upstream = await connect(
                target, additional_headers=headers, open_timeout=UPSTREAM_TIMEOUT_SECONDS, ping_interval=None,
                compression=None, max_size=MAX_UPSTREAM_FRAME_BYTES,
            )  # fmt: skip
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            error = self._refused(session_id, exc)
            await websocket.send_text(wire.encode(frame_error(session_id, error)).decode())
            await websocket.close(STREAM_CLOSE_CODES.get(error.code, 1011))
            return
        recorded = self.settings.record is not None and recordable(session_id)
        recorder = self._recorder(session_id) if recorded else None
        self.streaming[session_id] = self.streaming.get(session_id, 0) + 1
        try:
            await self._relay(websocket, upstream, session_id, recorder)
        finally:
            if (left := self.streaming.pop(session_id) - 1) > 0:
                self.streaming[session_id] = left
        if recorder is not None and recorder.confirmed:
            if self._write(recorder):
                self._release(session_id)
        elif recorder is not None:  # the upstream refused it: keep nothing of a session that does not exist
            self.recorders.pop(session_id, None)

    async def _relay(
        self, websocket: WebSocket, upstream: ClientConnection, session_id: str, recorder: Recorder | None
    ) -> None:
        async with upstream:
            to_upstream = asyncio.create_task(self._client_to_upstream(websocket, upstream, session_id, recorder))
            try:
                await self._upstream_to_client(websocket, upstream, session_id, recorder)
            finally:
                to_upstream.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await to_upstream
        if websocket.client_state == WebSocketState.CONNECTED:
            code = upstream.close_code if upstream.close_code not in (None, 1005, 1006) else 1011
            sent = upstream.protocol.close_sent
            if sent is not None and sent.code == 1009:  # its frame was too big
                code = 1009
            with contextlib.suppress(Exception):
                await websocket.close(code)

    def _refused(self, session_id: str, exc: Exception) -> ApiError:
        """What the client is told when the upstream's WebSocket would not open: a handshake refused with 401/403
        or 404 is the client's token or session (the contract closes those 4001 and 4004; retrying cannot help),
        anything else is the upstream being unavailable."""
        status = exc.response.status_code if isinstance(exc, InvalidStatus) else None
        where = f"stream {session_id}"
        if status in (401, 403, 404):
            detail = f"the upstream refused the WebSocket handshake with HTTP {status} instead of accepting it"
            self.report.add(
                "unexpected_status", where, f"{detail} (the contract: session.error, then a close)", session_id
            )
            if status == 404:
                return ApiError("session_not_found", f"The upstream {self.ws_base} knows no session {session_id!r}.")
            return ApiError("invalid_token", f"The upstream {self.ws_base} refused the stream's token (HTTP {status}).")
        self.report.add("upstream_unavailable", where, f"{type(exc).__name__}: {exc}", session_id)
        return ApiError("service_unavailable", f"The upstream {self.ws_base} refused the stream; try again.")

    async def _client_to_upstream(
        self, websocket: WebSocket, upstream: ClientConnection, session_id: str, recorder: Recorder | None
    ) -> None:
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                started = time.perf_counter()
                text = message.get("text")
                if text is None:
                    await upstream.send(message.get("bytes") or b"")
                    continue
                found = self.report.check_frame("client", text, session_id)
                if recorder is not None:
                    recorder.frame(time.time(), "client", text)
                if found and self.settings.strict:
                    await websocket.send_text(self._strict_frame(session_id, found))
                    continue
                await upstream.send(text)
                self.report.frame_latency.add((time.perf_counter() - started) * 1000)
        except (WebSocketDisconnect, ConnectionClosed, RuntimeError):
            pass
        await upstream.close()

    async def _upstream_to_client(
        self, websocket: WebSocket, upstream: ClientConnection, session_id: str, recorder: Recorder | None
    ) -> None:
        try:
            async for message in upstream:
                started = time.perf_counter()
                if isinstance(message, bytes):
                    await websocket.send_bytes(message)
                    continue
                found = self.report.check_frame("server", message, session_id)
                if recorder is not None:
                    recorder.frame(time.time(), "server", message)
                if found and self.settings.strict:
                    message = self._strict_frame(session_id, found)
                await websocket.send_text(message)
                self.report.frame_latency.add((time.perf_counter() - started) * 1000)
        except (ConnectionClosed, WebSocketDisconnect, RuntimeError):
            pass

    @staticmethod
    def _strict_frame(session_id: str, found: list[Difference]) -> str:
        error = strict_error(found)
        return wire.encode(frame_error(session_id, error)).decode()

    # --- the report --------------------------------------------------------------------------------

    async def report_route(self, request: Request) -> Response:
        return Response(msgspec.json.encode(self.report.view()), media_type="application/json")

    def write_report(self) -> None:
        if self.settings.report_file is not None:
            write_atomic(self.settings.report_file, msgspec.json.format(msgspec.json.encode(self.report.view())))


def recordable(session_id: str) -> bool:
    """Whether a session id (from a client's path) is safe as the name of its recording's folder."""
    return RECORDABLE_ID.fullmatch(session_id) is not None


def _raw_target(scope: Scope) -> str:
    """The path and query exactly as the client sent them, still percent-encoded: decoded, `%2F` or `%3F` would
    change the path and `%00` would not make a URL at all."""
    path: bytes = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string") or b""
    return path.decode("latin-1") + (f"?{query.decode('latin-1')}" if query else "")


def _json(body: bytes) -> Any:
    if not body.strip():
        return None
    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _language(value: Any) -> Language | None:
    return value if value in LANGUAGES else None


def create_proxy_app(settings: ProxySettings) -> Starlette:
    proxy = Proxy(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        proxy.client = httpx.AsyncClient(timeout=UPSTREAM_TIMEOUT_SECONDS, follow_redirects=False, trust_env=False)
        try:
            yield
        finally:
            await proxy.client.aclose()
            for recorder in proxy.recorders.values():
                proxy._write(recorder)
            proxy.write_report()

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    app = Starlette(
        routes=[
            Route(REPORT_PATH, proxy.report_route, methods=["GET"]),
            WebSocketRoute("/v1/sessions/{session_id}/connect", proxy.stream),
            Route("/{path:path}", proxy.forward, methods=methods),
        ],
        lifespan=lifespan,
    )
    app.state.proxy = proxy
    return app
