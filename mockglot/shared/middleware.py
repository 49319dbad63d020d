"""With several workers, each request runs holding the shared state, and is answered once what it changed is
saved: a client is never told of a change that a lost Redis then forgets.

A request about a session streamed on another live worker is run on that worker, and its answer is this one's:
it is sent there before it runs here (so it changes nothing here, and counts once), or, when only the handler
finds out (`Elsewhere`), from there.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mockglot.errors import ApiError
from mockglot.http import MAX_BODY_BYTES, error_response, request_id
from mockglot.shared.coordinator import FORWARDED_SCOPE_KEY, RedisCoordinator, Unavailable
from mockglot.state.replica import Elsewhere

# What never waits for the lock: health (a probe must answer while Redis is away), the inspector's pages and
# its endless event stream, and the API documents.
UNHELD_PATHS = (
    "/_mockglot/health",
    "/_mockglot/events",
    "/_mockglot/ui",
    "/_mockglot/openapi.json",
    "/_mockglot/asyncapi.json",
)


SESSION_PATH = re.compile(r"/(?:v1|_mockglot)/sessions/([^/]+)")


def held(path: str) -> bool:
    if path.startswith("/v1/"):
        return True
    return path.startswith("/_mockglot/") and not path.startswith(UNHELD_PATHS)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """The request's messages as read once (for each time the app is run), then the client's own."""
    pending = messages.copy()

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


async def _read(receive: Receive) -> tuple[list[Message], bytes]:
    """The body's messages, up to a little past the body limit (the app answers 413 beyond it)."""
    message = await receive()
    if message["type"] == "http.request" and not message.get("more_body", False):
        return [message], message.get("body", b"")  # as nearly every request comes: one message
    messages: list[Message] = [message]
    if message["type"] != "http.request":
        return messages, b""
    size = len(message.get("body", b""))
    while size <= MAX_BODY_BYTES:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return messages, b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")


class HoldSharedState:
    def __init__(self, app: ASGIApp, coordinator: RedisCoordinator) -> None:
        self.app = app
        self.coordinator = coordinator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not held(scope["path"]):
            await self.app(scope, receive, send)
            return
        messages, body = await _read(receive)
        forwarded = bool(scope.get(FORWARDED_SCOPE_KEY))
        coordinator = self.coordinator
        for _ in range(3):
            answer: list[Message] = []  # the response, sent once what the request changed is saved

            async def capture(message: Message, answer: list[Message] = answer) -> None:
                answer.append(message)

            try:
                holding = await coordinator.enter()
                try:
                    elsewhere = None if forwarded else self._streamed_elsewhere(scope["path"])
                    if elsewhere is not None:
                        raise Elsewhere(elsewhere)
                    await self.app(scope, _replay(messages, receive), capture)
                finally:
                    await coordinator.leave(holding)
            except Elsewhere as where:
                if forwarded:
                    await self._error(scope, receive, send, Unavailable("moved this session's stream meanwhile"))
                    return
                try:
                    forwarded_answer = await coordinator.forward(where.worker, dict(scope), body)
                except ApiError as exc:
                    await self._error(scope, receive, send, exc)
                    return
                if forwarded_answer is None:  # that worker is gone: its streams are no longer held; run it here
                    continue
                headers = [(name, value) for name, value in forwarded_answer.headers]
                await send({"type": "http.response.start", "status": forwarded_answer.status, "headers": headers})
                await send({"type": "http.response.body", "body": forwarded_answer.body})
                return
            except ApiError as exc:  # the state store failed: nothing this request did was kept
                await self._error(scope, receive, send, exc)
                return
            for message in answer:
                await send(message)
            return
        await self._error(scope, receive, send, Unavailable("could not settle where this session's stream is"))

    def _streamed_elsewhere(self, path: str) -> str | None:
        """The live worker a session in the path was streamed on, when it is not this one."""
        match = SESSION_PATH.match(path)
        if match is None:
            return None
        sessions = self.coordinator.state.sessions
        record = sessions.lookup(match.group(1))
        if record is None or not record.worker:  # (most sessions: never streamed)
            return None
        return record.worker if sessions.held_elsewhere(record) else None

    async def _error(self, scope: Scope, receive: Receive, send: Send, exc: ApiError) -> None:
        """The envelope, with a request ID of its own when the request never reached the edge that gives one."""
        rid = request_id(scope)
        headers: list[tuple[bytes, bytes]] = []
        if rid is None:
            state = self.coordinator.state
            rid = state.randomness.new_id("req", "request", state.clock.now())
            headers.append((b"x-request-id", rid.encode()))
        response: Any = error_response(exc, rid, headers)
        await response(scope, receive, send)
