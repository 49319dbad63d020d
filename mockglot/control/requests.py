"""The HTTP request journal."""

from __future__ import annotations

from mockglot import wire
from mockglot.control.endpoint import ControlContext, Endpoint, Reply, query_float
from mockglot.state.auth import redact
from mockglot.state.clock import isoformat

REDACTED_HEADERS = {"authorization", "x-api-key", "cookie"}


def shown_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Headers as sent, with credentials redacted."""
    headers = {}
    for name, value in raw:
        key, text = name.decode("latin-1"), value.decode("latin-1")
        headers[key] = redact(text) if key in REDACTED_HEADERS else text
    return headers


async def list_requests(ctx: ControlContext) -> Reply:
    key = ctx.query("api_key")
    limit = int(query_float(ctx, "limit", 100, 1, 10_000))
    entries = ctx.state.requests.entries(key, limit, ctx.query("session_id"))
    return Reply(
        200,
        wire.ListOf(
            data=[
                wire.RequestRecord(
                    request_id=e.request_id, at=isoformat(e.at), method=e.method, path=e.path,
                    query=e.query.decode("latin-1"), status=e.status, api_key=redact(e.api_key) if e.api_key else None,
                    headers=shown_headers(e.headers), body=e.body.decode("utf-8", "replace"),
                    duration_ms=round(e.duration_ms, 3), session_id=e.session_id, truncated=e.truncated,
                )
                for e in entries
            ]
        ),
    )  # fmt: skip


ENDPOINTS = [
    Endpoint(
        "GET", "/_mockglot/requests", list_requests, "", "Read the HTTP request journal",
        response=wire.ListOf, query={"api_key": str, "limit": int, "session_id": str},
    ),
]  # fmt: skip
