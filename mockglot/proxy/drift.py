"""What the proxy checks on the wire: every request, response and frame against the contract's wire types.

The checks are driven by the same `ENDPOINTS` tables that build mockglot's routes and OpenAPI document, and by
the stream's frame types in `wire.py`, so a contract change here is a change in one place. A difference is
reported, never fixed: the proxy forwards what the upstream said (or, in strict mode, refuses it).
"""

from __future__ import annotations

import re
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import msgspec

from mockglot import wire
from mockglot.errors import CATALOGUE, ApiError
from mockglot.validation import convert, unknown_fields

MAX_DIFFERENCES = 1000  # the report keeps the first this many in full; `counts` stays exact after that
MAX_TRACKED_STREAMS = 1000  # ordering state of this many streams at once; the oldest is forgotten first

CLIENT_FRAMES: dict[str, type] = {
    "audio.input": wire.AudioInput,
    "ping": wire.Ping,
    "session.end": wire.SessionEndFrame,
}
SERVER_FRAMES: dict[str, type] = {
    str(t.__struct_config__.tag): t
    for t in (
        wire.SessionReady,
        wire.TranscriptPartial,
        wire.TranscriptFinal,
        wire.AudioOutput,
        wire.Pong,
        wire.SessionEnded,
        wire.SessionError,
    )
}


@dataclass(frozen=True, slots=True)
class Operation:
    """One public operation as the proxy sees it: its path pattern and the types of its bodies."""

    method: str
    template: str
    pattern: re.Pattern[str]
    status: int
    request: type | None
    response: type | None


def operations() -> list[Operation]:
    """The public API's operations, from the tables mockglot routes with."""
    from mockglot.app import PUBLIC_ENDPOINTS

    found = []
    for endpoint in PUBLIC_ENDPOINTS:
        regex = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(endpoint.path))
        found.append(
            Operation(
                endpoint.method,
                endpoint.path,
                re.compile(f"^{regex}$"),
                endpoint.status,
                endpoint.request,
                endpoint.response,
            )
        )
    return found


class Difference(msgspec.Struct, kw_only=True):
    kind: str  # unknown_field, missing_field, invalid_value, unknown_frame_type, unknown_error_code, ...
    where: str  # "POST /v1/sessions response", "stream sess_... server frame 12 (transcript.final)"
    detail: str
    session_id: str | None = None
    at: float = 0.0  # unix seconds


class Latency(msgspec.Struct, kw_only=True):
    count: int = 0
    total_ms: float = 0.0
    max_ms: float = 0.0

    def add(self, ms: float) -> None:
        self.count += 1
        self.total_ms += ms
        self.max_ms = max(self.max_ms, ms)

    @property
    def mean_ms(self) -> float:
        return self.total_ms / self.count if self.count else 0.0


class ReportView(msgspec.Struct, kw_only=True):
    upstream: str
    strict: bool
    total: int
    counts: dict[str, int]
    differences: list[Difference]
    dropped: int
    rest_calls: int
    frames: int
    added_latency_ms: dict[str, dict[str, float]]


@dataclass(slots=True)
class _TurnOrder:
    finals: set[int] = field(default_factory=set)
    output_sequence: dict[str, int] = field(default_factory=dict)
    frames: int = 0


class DriftReport:
    """Every difference seen, counted per kind; bounded (see MAX_DIFFERENCES, MAX_TRACKED_STREAMS)."""

    def __init__(self, upstream: str, *, strict: bool = False) -> None:
        self.upstream = upstream
        self.strict = strict
        self.counts: Counter[str] = Counter()
        self.differences: list[Difference] = []
        self.rest_latency = Latency()
        self.frame_latency = Latency()
        self.rest_calls = 0
        self.frames = 0
        self._streams: dict[str, _TurnOrder] = {}
        self._stream_order: deque[str] = deque()
        self._operations = operations()

    # --- recording differences ---------------------------------------------------------------------

    def add(self, kind: str, where: str, detail: str, session_id: str | None = None) -> Difference:
        found = Difference(kind=kind, where=where, detail=detail, session_id=session_id, at=time.time())
        self.counts[kind] += 1
        if len(self.differences) < MAX_DIFFERENCES:
            self.differences.append(found)
        return found

    def view(self) -> ReportView:
        return ReportView(
            upstream=self.upstream,
            strict=self.strict,
            total=sum(self.counts.values()),
            counts=dict(sorted(self.counts.items())),
            differences=self.differences,
            dropped=max(sum(self.counts.values()) - len(self.differences), 0),
            rest_calls=self.rest_calls,
            frames=self.frames,
            added_latency_ms={
                "rest": {"count": self.rest_latency.count, "mean": self.rest_latency.mean_ms,
                         "max": self.rest_latency.max_ms},
                "frame": {"count": self.frame_latency.count, "mean": self.frame_latency.mean_ms,
                          "max": self.frame_latency.max_ms},
            },
        )  # fmt: skip

    # --- REST --------------------------------------------------------------------------------------

    def operation(self, method: str, path: str) -> Operation | None:
        return next((op for op in self._operations if op.method == method and op.pattern.match(path)), None)

    def check_request(self, method: str, path: str, body: bytes, session_id: str | None) -> list[Difference]:
        """What the contract would not accept in the client's request (the upstream may refuse it too)."""
        self.rest_calls += 1
        where = f"{method} {path} request"
        op = self.operation(method, path)
        if op is None:
            if path.startswith("/v1"):
                return [self.add("unknown_operation", where, "no such operation in the contract", session_id)]
            return []
        if op.request is None or not body.strip():
            return []
        try:
            raw = msgspec.json.decode(body)
        except (msgspec.DecodeError, RecursionError):
            return [self.add("invalid_json", where, "the request body is not JSON", session_id)]
        return self._check_value(raw, op.request, where, session_id)

    def check_response(
        self, method: str, path: str, status: int, content_type: str, body: bytes, headers: dict[str, str],
        session_id: str | None,
    ) -> list[Difference]:  # fmt: skip
        where = f"{method} {path} response {status}"
        found: list[Difference] = []
        if "x-request-id" not in headers:
            found.append(self.add("missing_header", where, "no X-Request-ID header", session_id))
        is_json = content_type.split(";", 1)[0].strip().lower() == "application/json"
        if status >= 400:
            if not is_json:
                return [*found, self.add("invalid_error", where, f"an error answered as {content_type!r}", session_id)]
            try:
                raw = msgspec.json.decode(body)
            except (msgspec.DecodeError, RecursionError):
                return [*found, self.add("invalid_json", where, "the error body is not JSON", session_id)]
            found += self._check_value(raw, wire.ErrorEnvelope, where, session_id)
            code = (
                raw.get("error", {}).get("code")
                if isinstance(raw, dict) and isinstance(raw.get("error"), dict)
                else None
            )
            if isinstance(code, str):
                kind = CATALOGUE.get(code)
                if kind is None:
                    found.append(self.add("unknown_error_code", where, f"error code {code!r} is not in the catalogue",
                                          session_id))  # fmt: skip
                elif kind.status != status:
                    found.append(self.add("status_mismatch", where, f"{code!r} is documented as HTTP {kind.status}",
                                          session_id))  # fmt: skip
            return found
        op = self.operation(method, path)
        if op is None:
            return found
        if status != op.status:
            found.append(self.add("unexpected_status", where, f"documented success status is {op.status}", session_id))
        if op.response is None or not is_json:
            return found
        try:
            raw = msgspec.json.decode(body)
        except (msgspec.DecodeError, RecursionError):
            return [*found, self.add("invalid_json", where, "the response body is not JSON", session_id)]
        return found + self._check_value(raw, op.response, where, session_id)

    def _check_value(self, raw: Any, type_: type, where: str, session_id: str | None) -> list[Difference]:
        found = [
            self.add("unknown_field", where, f"`{path}` is not in the contract", session_id)
            for path in unknown_fields(raw, type_)
        ]
        try:
            convert(raw, type_, strict=False)
        except ApiError as exc:
            kind = "missing_field" if exc.code == "missing_required_field" else "invalid_value"
            found.append(self.add(kind, where, exc.message, session_id))
        return found

    # --- the stream --------------------------------------------------------------------------------

    def check_frame(self, direction: str, text: str, session_id: str) -> list[Difference]:
        """One frame, `client` to server or `server` to client; ordering rules for the server's frames."""
        self.frames += 1
        order = self._order(session_id)
        order.frames += 1
        where = f"stream {session_id} {direction} frame {order.frames}"
        try:
            raw = msgspec.json.decode(text)
        except (msgspec.DecodeError, RecursionError):
            return [self.add("invalid_json", where, "the frame is not JSON", session_id)]
        kind = raw.get("type") if isinstance(raw, dict) else None
        types = CLIENT_FRAMES if direction == "client" else SERVER_FRAMES
        type_ = types.get(kind) if isinstance(kind, str) else None
        if type_ is None:
            return [self.add("unknown_frame_type", where, f"frame type {kind!r} is not in the contract", session_id)]
        where = f"{where} ({kind})"
        body = {k: v for k, v in raw.items() if k != "type"}
        found = self._check_value(body, type_, where, session_id)
        if direction == "server":
            found += self._check_order(order, raw, where, session_id)
            if kind == "session.error":
                code = (raw.get("error") or {}).get("code") if isinstance(raw.get("error"), dict) else None
                if isinstance(code, str) and code not in CATALOGUE:
                    found.append(self.add("unknown_error_code", where, f"error code {code!r} is not in the catalogue",
                                          session_id))  # fmt: skip
        return found

    def _check_order(self, order: _TurnOrder, raw: dict[str, Any], where: str, session_id: str) -> list[Difference]:
        kind, turn = raw.get("type"), raw.get("turn")
        if order.frames == 1 and kind not in ("session.ready", "session.error"):  # an error: a refused connect
            return [self.add("ordering", where, "the first server frame must be session.ready", session_id)]
        if not isinstance(turn, int):
            return []
        if kind == "transcript.final":
            if turn in order.finals:
                return [self.add("ordering", where, f"a second final for turn {turn}", session_id)]
            order.finals.add(turn)
        elif kind == "transcript.partial" and turn in order.finals:
            return [self.add("ordering", where, f"a partial for turn {turn} after its final", session_id)]
        elif kind == "audio.output":
            if turn not in order.finals:
                return [self.add("ordering", where, f"audio.output for turn {turn} before its final", session_id)]
            listener, sequence = str(raw.get("listener")), raw.get("sequence")
            if isinstance(sequence, int):
                last = order.output_sequence.get(listener, 0)
                order.output_sequence[listener] = sequence
                if sequence <= last:
                    return [self.add("ordering", where, f"audio.output sequence {sequence} after {last}", session_id)]
        return []

    def _order(self, session_id: str) -> _TurnOrder:
        order = self._streams.get(session_id)
        if order is None:
            order = self._streams[session_id] = _TurnOrder()
            self._stream_order.append(session_id)
            while len(self._stream_order) > MAX_TRACKED_STREAMS:
                self._streams.pop(self._stream_order.popleft(), None)
        return order

    def stream_closed(self, session_id: str) -> None:
        self._streams.pop(session_id, None)
        if session_id in self._stream_order:
            self._stream_order.remove(session_id)
