"""The HTTP request journal."""

from __future__ import annotations

from mockglot import wire
from mockglot.api.endpoint import Endpoint, Reply
from mockglot.control.endpoint import ControlContext, query_float
from mockglot.state.auth import redact
from mockglot.state.clock import isoformat


async def list_requests(ctx: ControlContext) -> Reply:
    key = ctx.query("api_key")
    limit = int(query_float(ctx, "limit", 100, 1, 10_000))
    entries = ctx.state.requests.entries(redact(key) if key else None, limit)
    return Reply(
        200,
        wire.ListOf(
            data=[
                wire.RequestRecord(
                    request_id=e.request_id, at=isoformat(e.at), method=e.method, path=e.path, query=e.query,
                    status=e.status, api_key=e.api_key, headers=e.headers, body=e.body, duration_ms=e.duration_ms,
                )
                for e in entries
            ]
        ),
    )  # fmt: skip


ENDPOINTS = [
    Endpoint(
        "GET", "/_mockglot/requests", list_requests, "", "Read the HTTP request journal",
        response=wire.ListOf, query={"api_key": str, "limit": int},
    ),
]  # fmt: skip
