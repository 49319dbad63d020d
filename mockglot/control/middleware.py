"""Instruments the public API for tests: the request journal, and REST faults (control-plane rules or a
request's own `Prefer` header, as Prism does)."""

from __future__ import annotations

import asyncio
import time

import msgspec
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mockglot.errors import CATALOGUE, ApiError
from mockglot.faults import error_code_for, fault_error
from mockglot.state.auth import redact
from mockglot.state.requests import MAX_BODY_CHARS, RequestEntry
from mockglot.state.server import ServerState

REDACTED_HEADERS = {"authorization", "x-api-key", "cookie"}


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def presented_key(headers: dict[str, str]) -> str | None:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return headers.get("x-api-key")


class PublicApiMiddleware:
    """Applies `handle` to the public API's HTTP requests (under /v1) and passes everything else through."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1"):
            await self.handle(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class RequestJournalMiddleware(PublicApiMiddleware):
    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        body = bytearray()
        status = 0

        async def receive_and_keep() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(body) < MAX_BODY_CHARS:
                body.extend(message.get("body", b"")[: MAX_BODY_CHARS - len(body)])
            return message

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive_and_keep, send_and_note)
        finally:
            headers = _headers(scope)
            key = presented_key(headers)
            self.state.requests.append(
                RequestEntry(
                    request_id=scope.get("state", {}).get("request_id", ""),
                    at=self.state.clock.now(),
                    method=scope["method"],
                    path=scope["path"],
                    query=scope.get("query_string", b"").decode("latin-1"),
                    status=status,
                    api_key=redact(key) if key else None,
                    headers={k: (redact(v) if k in REDACTED_HEADERS else v) for k, v in headers.items()},
                    body=body.decode("utf-8", "replace"),
                    duration_ms=round((time.perf_counter() - started) * 1000, 3),
                )
            )


def prefer_error(header: str) -> ApiError | None:
    """`Prefer: code=503` or `Prefer: error=service_unavailable` asks for that error on this request."""
    wanted = dict(part.strip().split("=", 1) for part in header.split(",") if "=" in part)  # e.g. {"code": "503"}
    code = wanted.get("error")
    if code is None and wanted.get("code", "").isdigit():
        code = error_code_for(int(wanted["code"]))
    if code is None or code not in CATALOGUE or CATALOGUE[code].status < 400:
        return None
    retry_after = 1 if CATALOGUE[code].status in (409, 429, 503) else None
    return ApiError(code, f"Error {code} requested by the Prefer header.", retry_after=retry_after)


class DroppedConnection(Exception):
    """Raised after the response has started: the server closes the connection mid-response."""


class FaultMiddleware(PublicApiMiddleware):
    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = _headers(scope)
        error = prefer_error(headers.get("prefer", ""))
        rule = None if error else self.state.faults.match_rest(scope["method"], scope["path"], presented_key(headers))
        if rule is not None:
            if rule.latency_ms:
                await asyncio.sleep(rule.latency_ms / 1000)
            if rule.drop:
                await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"64")]})
                raise DroppedConnection("connection dropped by an injected fault")
            error = fault_error(rule)
        if error is None:
            await self.app(scope, receive, send)
            return
        request_id = scope.get("state", {}).get("request_id")
        body = msgspec.json.encode(error.body(request_id))
        response_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if error.retry_after is not None:
            response_headers.append((b"retry-after", str(error.retry_after).encode()))
        await send({"type": "http.response.start", "status": error.status, "headers": response_headers})
        await send({"type": "http.response.body", "body": body})
