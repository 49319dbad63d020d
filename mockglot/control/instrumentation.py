"""Instruments the public API for tests: REST faults (control-plane rules, or a request's own `Prefer` header
as Prism does) and the request journal."""

from __future__ import annotations

import asyncio
import time

import msgspec
from starlette.types import Send

from mockglot.control.contract import observe_rest
from mockglot.errors import CATALOGUE, ApiError
from mockglot.faults import error_code_for, fault_error
from mockglot.http import Request, Response, error_response
from mockglot.router import HttpHandler
from mockglot.state.requests import RequestEntry
from mockglot.state.server import ServerState

DROPPED_BODY_LENGTH = b"64"  # promised by the dropped response, never sent


def presented_key(request: Request) -> str | None:
    """The API key as presented, for the journal and fault matching; whether it is valid is not asked here."""
    authorization = request.header(b"authorization")
    if authorization is not None:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    x_api_key = request.header(b"x-api-key")
    return x_api_key.strip() if x_api_key is not None else None


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


class _Created(msgspec.Struct):
    id: str


def session_of(request: Request, response: Response | None) -> str | None:
    """The session a request concerns: the one in its path, or the one it created."""
    session_id = request.path_params.get("session_id")
    if session_id is None and response is not None and response.status == 201 and request.path == "/v1/sessions":
        try:
            session_id = msgspec.json.decode(response.body, type=_Created).id
        except msgspec.DecodeError:
            return None
    return session_id


class Instrumentation:
    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def __call__(self, request: Request, send: Send, serve: HttpHandler) -> Response | None:
        """The response to send, or None when a fault dropped the connection after starting it."""
        started = time.perf_counter()
        key = presented_key(request)
        status = 0
        response: Response | None = None
        try:
            prefer = request.header(b"prefer")
            if prefer is None and not self.state.faults.has_rest:  # as nearly every request runs
                response = await serve(request)
            else:
                response = await self._faulted_or_served(request, key, prefer, send, serve)
            status = response.status if response is not None else 200  # a dropped response started as 200
            return response
        finally:
            duration_ms = (time.perf_counter() - started) * 1000
            session_id = session_of(request, response)
            self.state.requests.append(
                RequestEntry(
                    request.id,
                    self.state.clock.now(),
                    request.method,
                    request.path,
                    request.scope["query_string"],
                    status,
                    key,
                    tuple(request.scope["headers"]),
                    request.body,  # the journal cuts it to its limit
                    duration_ms,
                    session_id,
                )
            )
            self._announce(request, key, status, duration_ms, session_id)
            observe_rest(self.state, request, key, response)  # the contract report

    def _announce(
        self, request: Request, key: str | None, status: int, duration_ms: float, session_id: str | None
    ) -> None:
        """The request in the inspector's feed."""
        found = self.state.keys.get(key) if key is not None else None
        data = {
            "request_id": request.id,
            "method": request.method,
            "path": request.path,
            "status": status,
            "duration_ms": round(duration_ms, 3),
        }
        self.state.feed.publish("request", session_id, found.organization if found else None, key, data)

    async def _faulted_or_served(
        self, request: Request, key: str | None, prefer: str | None, send: Send, serve: HttpHandler
    ) -> Response | None:
        error = prefer_error(prefer) if prefer else None
        if error is None and self.state.faults.has_rest:
            rule = self.state.faults.match_rest(request.method, request.path, key)
            if rule is not None:
                if rule.latency_ms:
                    await asyncio.sleep(rule.latency_ms / 1000)
                if rule.drop:
                    headers = [(b"content-length", DROPPED_BODY_LENGTH)]
                    await send({"type": "http.response.start", "status": 200, "headers": headers})
                    return None  # the server closes a connection whose response never completes
                error = fault_error(rule)
        if error is None:
            return await serve(request)
        return error_response(error, request.id)
