"""Instruments the public API for tests: REST faults (control-plane rules, or a request's own `Prefer` header
as Prism does), and the record of each request in the request journal, the inspector's feed and the contract
report. Called by the edge middleware (`mockglot.middleware.EdgeMiddleware`) for requests under /v1.

Recording keeps the request's raw pieces (its headers and body as they came, one journal entry that the feed's
event points to); the journal and the feed render them when they are read."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time

import msgspec
from starlette.types import ASGIApp, Receive, Scope, Send

from mockglot.api.endpoint import CREATED_SCOPE_KEY, DELAY_SCOPE_KEY, KEY_SCOPE_KEY
from mockglot.control.contract import observe_rest
from mockglot.errors import CATALOGUE, ApiError
from mockglot.faults import error_code_for, fault_error
from mockglot.http import (
    BODY_SCOPE_KEY,
    Request,
    credentials_of,
    error_response,
    headers_of,
    read_body,
    request_id,
)
from mockglot.routing import IndexedRouter
from mockglot.state.auth import ApiKey
from mockglot.state.requests import RequestEntry
from mockglot.state.server import ServerState

PUBLIC_PREFIX = "/v1"
DROPPED_BODY_LENGTH = b"64"  # promised by the dropped response, never sent
CLIENT_CLOSED = 499  # journaled for a request whose client left before its body was complete: nothing was done
_STATUS = re.compile(r"[1-5][0-9][0-9]")  # ASCII digits only (`str.isdigit` takes "²")
_SESSIONS = "/v1/sessions"


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


_created = msgspec.json.Decoder(_Created)


def session_of(scope: Scope, status: int, body: bytes) -> str | None:
    """The session a request concerns: the one in its path, or the one it created."""
    params = scope.get("path_params")
    session_id: str | None = params.get("session_id") if params else None
    if session_id is None and status == 201 and scope["path"] == _SESSIONS:
        session_id = scope.get(CREATED_SCOPE_KEY)  # the endpoint says what it created
        if session_id is None:
            try:
                session_id = _created.decode(body).id
            except msgspec.DecodeError:
                return None
    return session_id


class Instrumentation:
    """Faults before a request under /v1 is served, and its record once it is answered."""

    def __init__(self, app: ASGIApp, state: ServerState, router: IndexedRouter | None = None) -> None:
        self.app = app
        self.state = state
        self.router = router  # says what a requested 405 allows

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request, or answer it with the fault it asks for (`Prefer`) or an armed rule matches. (The
        edge middleware serves a request that neither could concern without calling this.)"""
        if self.state.faults.has_rest or "prefer" in headers_of(scope):
            await self._faulted_or_served(scope, receive, send, headers_of(scope).get("prefer"))
        else:
            await self.app(scope, receive, send)

    def record(self, scope: Scope, started: float, header_bytes: int, status: int, body: bytes) -> None:
        """The request in the journal, the inspector's feed and the contract report. `status` and `body` are the
        response's (`body` empty when it never came); `header_bytes` the request headers' size, as measured."""
        state = self.state
        duration_ms = (time.perf_counter() - started) * 1000
        key = credentials_of(scope).api_key
        session_id = session_of(scope, status, body)
        entry = RequestEntry(
            request_id(scope) or "",
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
        entry = state.requests.append(entry, header_bytes)  # as kept: within the journal's limits
        found: ApiKey | None = scope.get(KEY_SCOPE_KEY)  # the key the endpoint authenticated, if it did
        if found is None or found.key != key:
            found = state.keys.get(key) if key is not None else None
        state.feed.publish("request", session_id, found.organization if found else None, key, entry)
        if key is not None:
            observe_rest(state, scope, key, found, status if status != CLIENT_CLOSED else None, body)

    async def _faulted_or_served(self, scope: Scope, receive: Receive, send: Send, prefer: str | None) -> None:
        error = prefer_error(prefer) if prefer else None
        if error is None and self.state.faults.has_rest:
            key = credentials_of(scope).api_key
            rule = self.state.faults.match_rest(scope["method"], scope["path"], key)
            if rule is not None:
                error = fault_error(rule)
                if rule.drop or error is not None:
                    if rule.latency_ms:
                        await self.state.coordinator.outside(asyncio.sleep(rule.latency_ms / 1000))
                    if rule.drop:
                        await journal_body(scope, receive)
                        headers = [(b"content-length", DROPPED_BODY_LENGTH)]
                        await send({"type": "http.response.start", "status": 200, "headers": headers})
                        return  # the server closes a connection whose response never completes
                elif rule.latency_ms:
                    # Served by the endpoint once it has claimed the request's idempotency key, so a duplicate
                    # sent meanwhile sees this one in flight (kallglot-api.md §4); by the edge middleware
                    # before any response that comes sooner.
                    scope[DELAY_SCOPE_KEY] = rule.latency_ms / 1000
        if error is None:
            await self.app(scope, receive, send)
        else:
            await journal_body(scope, receive)
            headers = []
            if error.code == "method_not_allowed" and self.router is not None:  # RFC 9110: a 405 says what is
                headers.append((b"allow", self.router.allowed(scope["path"]).encode()))  # allowed
            await error_response(error, request_id(scope), headers)(scope, receive, send)
