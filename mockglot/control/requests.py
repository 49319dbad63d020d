"""The HTTP request journal."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode

import msgspec

from mockglot import wire
from mockglot.control.endpoint import ControlContext, Endpoint, Reply, query_float
from mockglot.logs import redact_url
from mockglot.state.auth import redact
from mockglot.state.clock import isoformat

CREDENTIAL_NAMES = {"authorization", "proxy-authorization", "x-api-key", "cookie", "set-cookie", "key", "sig"}
# Any header or query parameter whose name contains one of these carries a secret as far as the journal knows.
CREDENTIAL_WORDS = (
    "auth", "token", "api-key", "api_key", "apikey", "secret", "password", "passwd", "signature", "credential",
    "cookie", "private",
)  # fmt: skip


def is_credential(name: str) -> bool:
    name = name.lower()
    return name in CREDENTIAL_NAMES or any(word in name for word in CREDENTIAL_WORDS)


def shown_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Headers as sent, with every credential redacted."""
    headers = {}
    for name, value in raw:
        key, text = name.decode("latin-1"), value.decode("latin-1")
        headers[key] = redact(text) if is_credential(key) else text
    return headers


def shown_query(raw: bytes) -> str:
    """The query string as sent, with every credential-bearing parameter's value redacted."""
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    shown = [(name, redact(value) if is_credential(name) else redact_url(value)) for name, value in pairs]
    return urlencode(shown, safe="…<>")


class _Records(msgspec.Struct):
    """Another worker's answer to the same read."""

    data: list[wire.RequestRecord]


_RECORDS = msgspec.json.Decoder(_Records)


async def list_requests(ctx: ControlContext) -> Reply:
    key = ctx.query("api_key")
    limit = int(query_float(ctx, "limit", 100, 1, 10_000))
    entries = ctx.state.requests.entries(key, limit, ctx.query("session_id"))
    records = [
        wire.RequestRecord(
            request_id=e.request_id, at=isoformat(e.at), method=e.method, path=redact_url(e.path),
            query=shown_query(e.query), status=e.status, api_key=redact(e.api_key) if e.api_key else None,
            headers=shown_headers(e.headers), body=e.body.decode("utf-8", "replace"),
            duration_ms=round(e.duration_ms, 3), session_id=e.session_id and redact_url(e.session_id),
            truncated=e.truncated, unix=round(e.at, 3),
        )
        for e in entries
    ]  # fmt: skip
    if ctx.state.shared:  # each worker journals what it served: the journal is all of theirs, newest last
        coordinator = ctx.state.coordinator
        for body in await coordinator.outside(coordinator.from_others(ctx.request.scope)):
            records += _RECORDS.decode(body).data
        records = sorted(records, key=lambda record: record.unix or 0.0)[-limit:]
    return Reply(200, wire.ListOf(data=records))


ENDPOINTS = [
    Endpoint(
        "GET", "/_mockglot/requests", list_requests, "", "Read the HTTP request journal",
        response=wire.ListOf, query={"api_key": str, "limit": int, "session_id": str},
    ),
]  # fmt: skip
