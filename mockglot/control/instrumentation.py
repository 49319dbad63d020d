"""Instruments the public API for tests: REST faults (control-plane rules, or a request's own `Prefer` header
as Prism does) and the request journal. Pure ASGI middleware, inside the request-ID middleware."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time

import msgspec
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mockglot.api.endpoint import DELAY_SCOPE_KEY
from mockglot.control.contract import observe_rest
from mockglot.errors import CATALOGUE, ApiError
from mockglot.faults import error_code_for, fault_error
from mockglot.http import (
    BODY_SCOPE_KEY,
    RawResponse,
    Request,
    credentials_of,
    error_response,
    headers_of,
    read_body,
    request_id,
)
from mockglot.state.requests import RequestEntry
from mockglot.state.server import ServerState

PUBLIC_PREFIX = "/v1"
DROPPED_BODY_LENGTH = b"64"  # promised by the dropped response, never sent
CLIENT_CLOSED = 499  # journaled for a request whose client left before its body was complete: nothing was done
_STATUS = re.compile(r"[1-5][0-9][0-9]")  # ASCII digits only (`str.isdigit` takes "²")


def prefer_error(header: str) -> ApiError | None:
    """`Prefer: code=503` or `Prefer: error=service_unavailable` asks for that error on this request.

    Anything else in the header is ignored, as RFC 7240 asks of preferences a server does not know."""
    wanted = dict(part.strip().split("=", 1) for part in header.split(",") if "=" in part)
    code = wanted.get("error")
    status = wanted.get("code", "").strip()
    if code is None and _STATUS.fullmatch(status):
        code = error_code_for(int(status))
    if code is None or code not in CATALOGUE or CATALOGUE[code].status < 400:
        return None
    retry_after = 1 if CATALOGUE[code].status in (409, 429, 503) else None
    return ApiError(code, f"Error {code} requested by the Prefer header.", retry_after=retry_after)


async def journal_body(scope: Scope, receive: Receive) -> None:
    """Read the body of a request that a fault answers, so the journal shows what was sent."""
    if scope["method"] in ("POST", "PUT", "PATCH"):
        with contextlib.suppress(ApiError):  # over the limit: journaled without it
            await read_body(Request(scope, receive))


class _Created(msgspec.Struct):
    id: str


def session_of(scope: Scope, status: int, body: bytes) -> str | None:
    """The session a request concerns: the one in its path, or the one it created."""
    session_id: str | None = scope.get("path_params", {}).get("session_id")
    if session_id is None and status == 201 and scope["path"] == "/v1/sessions":
        try:
            session_id = msgspec.json.decode(body, type=_Created).id
        except msgspec.DecodeError:
            return None
    return session_id


class Instrumentation:
    """Faults and the journal for requests under /v1; everything else passes straight through."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PUBLIC_PREFIX):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = headers_of(scope)
        key = credentials_of(scope).api_key
        held: Message | None = None  # the response start, held until its body: the journal goes first
        recorded = False

        def record(status: int, response_headers: list[tuple[bytes, bytes]], body: bytes) -> None:
            nonlocal recorded
            recorded = True
            self._record(scope, key, started, RawResponse(status, body, response_headers))

        async def send_recorded(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and not recorded:
                held = message
                return
            if held is not None:
                record(held["status"], list(held["headers"]), message.get("body", b""))
                start, held = held, None
                await send(start)
            await send(message)

        try:
            prefer = headers.get("prefer")
            if prefer is None and not self.state.faults.has_rest:  # as nearly every request runs
                await self.app(scope, receive, send_recorded)
            else:
                await self._faulted_or_served(scope, receive, send_recorded, key, prefer)
            if held is not None:  # a dropped response: started, never completed
                record(held["status"], list(held["headers"]), b"")
                await send(held)
        except ClientDisconnect:
            if not recorded:
                record(CLIENT_CLOSED, [], b"")
            raise
        except Exception:
            if not recorded:
                with contextlib.suppress(Exception):  # the failure itself is logged by the request-ID middleware
                    record(500, [], b"")
            raise

    def _record(self, scope: Scope, key: str | None, started: float, response: RawResponse) -> None:
        """The request in the journal, the inspector's feed and the contract report."""
        state = self.state
        duration_ms = (time.perf_counter() - started) * 1000
        status = response.status_code
        session_id = session_of(scope, status, bytes(response.body))
        rid = request_id(scope) or ""
        state.requests.append(
            RequestEntry(
                rid,
                state.clock.now(),
                scope["method"],
                scope["path"],
                scope["query_string"],
                status,
                key,
                tuple(scope["headers"]),
                scope.get(BODY_SCOPE_KEY, b""),  # the journal cuts it to its limit
                duration_ms,
                session_id,
            )
        )
        found = state.keys.get(key) if key is not None else None
        data = {
            "request_id": rid,
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "duration_ms": round(duration_ms, 3),
        }
        state.feed.publish("request", session_id, found.organization if found else None, key, data)
        observe_rest(state, scope, key, found, response if status != CLIENT_CLOSED else None)

    async def _faulted_or_served(
        self, scope: Scope, receive: Receive, send: Send, key: str | None, prefer: str | None
    ) -> None:
        error = prefer_error(prefer) if prefer else None
        if error is None and self.state.faults.has_rest:
            rule = self.state.faults.match_rest(scope["method"], scope["path"], key)
            if rule is not None:
                error = fault_error(rule)
                if rule.drop or error is not None:
                    if rule.latency_ms:
                        await asyncio.sleep(rule.latency_ms / 1000)
                    if rule.drop:
                        await journal_body(scope, receive)
                        headers = [(b"content-length", DROPPED_BODY_LENGTH)]
                        await send({"type": "http.response.start", "status": 200, "headers": headers})
                        return  # the server closes a connection whose response never completes
                elif rule.latency_ms:
                    # Served by the endpoint once it has claimed the request's idempotency key, so a duplicate
                    # sent meanwhile sees this one in flight (kallglot-api.md §4); by the request-ID middleware
                    # before any response that comes sooner.
                    scope[DELAY_SCOPE_KEY] = rule.latency_ms / 1000
        if error is None:
            await self.app(scope, receive, send)
        else:
            await journal_body(scope, receive)
            await error_response(error, request_id(scope))(scope, receive, send)
