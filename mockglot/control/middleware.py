"""Instruments the public API for tests: REST faults (control-plane rules, or a request's own `Prefer` header
as Prism does) and the request journal. One pass over the raw headers; nothing decoded that is not needed."""

from __future__ import annotations

import asyncio
import time

import msgspec
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mockglot.errors import CATALOGUE, ApiError
from mockglot.faults import error_code_for, fault_error
from mockglot.state.requests import MAX_BODY_BYTES, RequestEntry
from mockglot.state.server import ServerState


def presented_key(authorization: bytes | None, x_api_key: bytes | None) -> str | None:
    if authorization is not None:
        scheme, _, value = authorization.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return x_api_key.decode("latin-1").strip() if x_api_key is not None else None


def prefer_error(header: str) -> ApiError | None:
    """`Prefer: code=503` or `Prefer: error=service_unavailable` asks for that error on this request."""
    wanted = dict(part.strip().split("=", 1) for part in header.split(",") if "=" in part)
    code = wanted.get("error")
    if code is None and wanted.get("code", "").isdigit():
        code = error_code_for(int(wanted["code"]))
    if code is None or code not in CATALOGUE or CATALOGUE[code].status < 400:
        return None
    retry_after = 1 if CATALOGUE[code].status in (409, 429, 503) else None
    return ApiError(code, f"Error {code} requested by the Prefer header.", retry_after=retry_after)


class DroppedConnection(Exception):
    """Raised after the response has started: the server closes the connection mid-response."""


class InstrumentationMiddleware:
    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        wanted = {b"authorization": None, b"x-api-key": None, b"prefer": None}
        for name, value in scope["headers"]:
            if name in wanted:
                wanted[name] = value
        key = presented_key(wanted[b"authorization"], wanted[b"x-api-key"])
        body = bytearray()
        status = 0

        async def receive_and_keep() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(body) < MAX_BODY_BYTES:
                body.extend(message.get("body", b"")[: MAX_BODY_BYTES - len(body)])
            return message

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._faulted_or_served(scope, receive_and_keep, send_and_note, key, wanted[b"prefer"])
        finally:
            self.state.requests.append(
                RequestEntry(
                    request_id=scope.get("state", {}).get("request_id", ""),
                    at=self.state.clock.now(),
                    method=scope["method"],
                    path=scope["path"],
                    query=scope.get("query_string", b""),
                    status=status,
                    api_key=key,
                    headers=list(scope["headers"]),
                    body=bytes(body),
                    duration_ms=round((time.perf_counter() - started) * 1000, 3),
                )
            )

    async def _faulted_or_served(
        self, scope: Scope, receive: Receive, send: Send, key: str | None, prefer: bytes | None
    ) -> None:
        error = prefer_error(prefer.decode("latin-1")) if prefer else None
        if error is None and self.state.faults.has_rest:
            rule = self.state.faults.match_rest(scope["method"], scope["path"], key)
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
        while (await receive()).get("more_body"):  # read the request anyway: the journal shows what was sent
            pass
        body = msgspec.json.encode(error.body(scope.get("state", {}).get("request_id")))
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if error.retry_after is not None:
            headers.append((b"retry-after", str(error.retry_after).encode()))
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
