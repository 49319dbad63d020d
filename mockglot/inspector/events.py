"""`GET /_mockglot/events`: the inspector's feed as Server-Sent Events.

Written here rather than with sse-starlette: what this stream needs beyond the framing (a backlog to resume
from, a bounded queue per subscriber, telling a slow one it lagged) is the feed's, and the framing is a line.
"""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
from starlette.types import Receive, Scope, Send

from mockglot.api.endpoint import Endpoint, Reply
from mockglot.control.endpoint import check_token
from mockglot.errors import ApiError
from mockglot.http import Request, error_response, request_id
from mockglot.state.feed import BACKLOG_EVENTS, MAX_SUBSCRIBERS, SUBSCRIBER_QUEUE_EVENTS, Feed, Filter, encode
from mockglot.state.server import ServerState

HEARTBEAT_SECONDS = 15.0
MAX_FILTER_CHARS = 200
RETRY_MS = 2000
HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),  # a proxy in front must not buffer the stream
]


def resync(reason: str, **extra: object) -> bytes:
    """Tells the client its view has a hole: read the state again from the control plane's JSON routes."""
    return b"event: resync\ndata: %s\n\n" % msgspec.json.encode({"reason": reason, **extra})


def parse(request: Request) -> tuple[Filter, int | None]:
    def text(name: str) -> str | None:
        value = request.query_params.get(name)
        if value is not None and not 0 < len(value) <= MAX_FILTER_CHARS:
            raise ApiError("invalid_field_value", f"`{name}` must be 1 to {MAX_FILTER_CHARS} characters.", param=name)
        return value

    types = text("types")
    last = request.headers.get("last-event-id") or text("last_event_id")
    last_id = None
    if last is not None:
        if not (last.strip().isascii() and last.strip().isdigit()) or len(last.strip()) > 18:
            raise ApiError(
                "invalid_field_value",
                "`Last-Event-ID` (or `last_event_id`) is the `id` of the last event received: a whole number.",
                param="last_event_id",
            )
        last_id = int(last)
    filter_ = Filter(
        session_id=text("session_id"),
        organization=text("organization"),
        api_key=text("api_key"),
        types=None if types is None else frozenset(t.strip() for t in types.split(",") if t.strip()),
    )
    return filter_, last_id


class EventStream:
    """The ASGI app of the route: one subscription per connection, gone when the client disconnects."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.feed: Feed = state.feed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            if request.method not in ("GET", "HEAD"):
                raise ApiError("method_not_allowed", "The event stream is read with GET.")
            check_token(request, self.state.settings.control_token)
            filter_, last_id = parse(request)
            if self.feed.subscribers >= MAX_SUBSCRIBERS:
                raise ApiError(
                    "service_unavailable",
                    f"{MAX_SUBSCRIBERS} clients already follow the event stream; close one and retry.",
                    retry_after=5,
                )
        except ApiError as exc:
            await error_response(exc, request_id(scope))(scope, receive, send)
            return
        subscription, gap = self.feed.subscribe(filter_, last_id)
        disconnected = asyncio.ensure_future(_disconnect(receive))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            opening = b"retry: %d\n\n" % RETRY_MS
            if gap:
                opening += resync("backlog", detail="events after Last-Event-ID are no longer kept")
            await _body(send, opening)
            if request.method == "HEAD":
                return
            while True:
                events, dropped = subscription.take()
                chunk = resync("slow_consumer", dropped=dropped) if dropped else b""
                chunk += b"".join(encode(event) for event in events)
                if chunk:
                    await _body(send, chunk)
                if subscription.queue:
                    continue
                waiter = asyncio.ensure_future(subscription.changed.wait())
                done, _ = await asyncio.wait(
                    {waiter, disconnected}, timeout=HEARTBEAT_SECONDS, return_when="FIRST_COMPLETED"
                )
                waiter.cancel()
                if disconnected in done:
                    return
                if not done:
                    await _body(send, b": keep-alive\n\n")
        except OSError:  # the client went away while we were writing
            return
        finally:
            subscription.close()
            disconnected.cancel()
            with contextlib.suppress(OSError):
                await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _body(send: Send, chunk: bytes) -> None:
    await send({"type": "http.response.body", "body": chunk, "more_body": True})


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _served_elsewhere(ctx: object) -> Reply:
    raise AssertionError("the event stream is served by EventStream, not the endpoint runner")


ENDPOINT = Endpoint(
    "GET", "/_mockglot/events", _served_elsewhere, "", "Follow what happens (Server-Sent Events)",
    query={"session_id": str, "organization": str, "api_key": str, "types": str, "last_event_id": int},
    media_types=("text/event-stream",),
)  # fmt: skip
DESCRIPTION = f"""Every event is one SSE message: `id` (increasing), `event` (its type) and `data`, a JSON object
with `id`, `type`, `at` (server clock, unix seconds), `session_id`, `organization`, `api_key` (redacted) and
`data` (what happened). Types: `session.created`, `session.started`, `session.ended`, `session.connected`,
`session.disconnected`, the other webhook event types (`transcript.segment`, `recording.ready`, ...), `frame`
(one stream frame either way: `direction` `in` is client to server), `request` (one public API request),
`webhook.attempt`, `fault.fired` and `reset`.

Filters (all optional, all must hold): `session_id`, `organization`, `api_key` (a full key, compared by hash, or
its redacted form `sk_test_…1234`) and `types` (comma-separated; `session.` matches every type starting so).

Resume: send `Last-Event-ID` (or `?last_event_id=`) to receive the events after it that are still in the
backlog (the last {BACKLOG_EVENTS} events); `last_event_id=0` replays the whole backlog. When some are already
gone the stream starts with a `resync` event.

A client that reads too slowly loses the oldest of its queued events (at most {SUBSCRIBER_QUEUE_EVENTS} wait)
and then receives `resync` with `reason: slow_consumer` and how many were `dropped`: read the state again from
the JSON routes. It never slows the server down. A comment line is sent every {HEARTBEAT_SECONDS:g} seconds of
silence; at most {MAX_SUBSCRIBERS} clients follow at once (503 beyond)."""
