"""Faults a test asks for: what goes wrong, when, and how often."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import msgspec

from mockglot.errors import CATALOGUE, ApiError
from mockglot.state.auth import redact
from mockglot.state.feed import Feed
from mockglot.state.randomness import Randomness
from mockglot.state.replica import DocTracker, SharedDocs
from mockglot.wire import RestFault, StreamFault

MAX_FAULTS = 1000  # armed at once, across organizations
METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}


def stream_fault_problem(rule: StreamFault) -> str | None:
    """Why this stream fault can never fire, or None when it can."""
    if rule.after_frames is not None and rule.after_finals is not None:
        return "give after_frames or after_finals, not both"
    if rule.probability == 0:
        return "probability 0 never fires"
    if rule.error_code not in CATALOGUE:
        return f"unknown error_code {rule.error_code!r}"
    if rule.action == "close" and rule.close_code in (1005, 1006, 1015):
        return f"close code {rule.close_code} is reserved and cannot be sent"
    return None


def rest_fault_problem(rule: RestFault) -> str | None:
    """Why this REST fault can never match or would do nothing, or None when it is sound."""
    if rule.method is not None and rule.method.upper() not in METHODS:
        return f"method {rule.method!r} is not an HTTP method"
    if rule.path is not None and not rule.path.startswith(("/v1", "*")):
        return f"path {rule.path!r} never matches: faults apply to the public API under /v1"
    if rule.probability == 0:
        return "probability 0 never fires"
    if rule.error_code is not None and rule.error_code not in CATALOGUE:
        return f"unknown error_code {rule.error_code!r}"
    if rule.error_code is None and rule.status is not None and error_code_for(rule.status) is None:
        return f"no error code has status {rule.status}: give error_code too"
    if rule.error_code is None and rule.status is None and not rule.drop and rule.latency_ms == 0:
        return "the fault does nothing: give error_code or status, latency_ms, or drop"
    return None


def error_code_for(status: int) -> str | None:
    return next((code for code, kind in CATALOGUE.items() if kind.status == status), None)


def fault_error(rule: RestFault) -> ApiError | None:
    code = rule.error_code or (error_code_for(rule.status) if rule.status is not None else None)
    if code is None:
        return None
    retry_after = 1 if CATALOGUE[code].status in (409, 429, 503) else None
    message = rule.message or f"Injected fault ({code}) from the mockglot control plane."
    return ApiError(code, message, status=rule.status, retry_after=retry_after)


@dataclass(slots=True)
class ArmedFault:
    id: str
    kind: Literal["rest", "stream"]
    rule: RestFault | StreamFault
    fired: int = 0
    order: int = 0  # when it was armed, among the registry's faults: the first that matches fires

    @property
    def times(self) -> int | None:
        return self.rule.times

    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times


class FaultRegistry(SharedDocs):
    """Faults armed through the control plane; scenario faults live with their scenario."""

    def __init__(self, randomness: Randomness, feed: Feed | None = None) -> None:
        self.randomness = randomness
        self.feed = feed
        self._faults: dict[str, ArmedFault] = {}  # in the order they were armed
        self._armed = 0  # the last fault's order
        self.tracker: DocTracker | None = None  # shared between workers: one document per fault
        self.on_change: Callable[[], None] = lambda: None  # a stream fired a fault: share it soon

    # --- shared between workers (see state/replica.py) ---------------------------------------------------

    name = "faults"

    def share(self) -> None:
        self.tracker = DocTracker(self._encode)

    def _touch(self, fault_id: str) -> None:
        if self.tracker is not None:
            self.tracker.touch(fault_id)

    def _encode(self, fault_id: str) -> bytes | None:
        fault = self._faults.get(fault_id)
        return None if fault is None else _ENCODER.encode((fault.kind, fault.fired, fault.order, fault.rule))

    def load(self, fault_id: str, data: bytes | None) -> None:
        """Another worker's version of a fault. One this worker knows changes in place: a live stream holds it."""
        if self.tracker is not None:
            self.tracker.loaded(fault_id, data)
        if data is None:
            self._faults.pop(fault_id, None)
            return
        kind, fired, order, raw = _DOC_DECODER.decode(data)
        rule: RestFault | StreamFault = (_REST_DECODER if kind == "rest" else _STREAM_DECODER).decode(raw)
        fault = self._faults.get(fault_id)
        if fault is not None:
            fault.kind, fault.rule, fault.fired = kind, rule, fired
            return
        self._faults[fault_id] = ArmedFault(fault_id, kind, rule, fired, order)
        if order < self._armed:  # documents load in any order: keep the order they were armed in
            self._faults = dict(sorted(self._faults.items(), key=lambda item: item[1].order))
        self._armed = max(self._armed, order)

    def reset(self, api_keys: set[str] | None = None) -> None:
        if api_keys is None:
            if self.tracker is not None:
                self.tracker.touched.update(self.tracker.known())
                self.tracker.touched.update(self._faults)
            self._faults.clear()
        else:
            kept = {k: f for k, f in self._faults.items() if f.rule.api_key not in api_keys}
            if self.tracker is not None:
                self.tracker.touched.update(k for k in self._faults if k not in kept)
            self._faults = kept

    def add(self, kind: Literal["rest", "stream"], rule: RestFault | StreamFault, now: float) -> ArmedFault:
        if len(self._faults) >= MAX_FAULTS:
            raise ApiError(
                "invalid_field_value",
                f"{MAX_FAULTS} faults are armed already, the most this server keeps. Delete some "
                "(DELETE /_mockglot/faults/{id}) or reset the organization.",
            )
        self._armed += 1
        fault = ArmedFault(self.randomness.new_id("flt", "fault", now), kind, rule, order=self._armed)
        self._faults[fault.id] = fault
        self._touch(fault.id)
        return fault

    def remove(self, fault_id: str) -> bool:
        self._touch(fault_id)
        return self._faults.pop(fault_id, None) is not None

    def all(self) -> list[ArmedFault]:
        """Every armed fault (the caller may change them: shared, each counts as touched)."""
        if self.tracker is not None:
            self.tracker.touched.update(self._faults)
        return list(self._faults.values())

    @property
    def has_rest(self) -> bool:
        """Cheap check before matching: most requests run with no REST fault armed."""
        return bool(self._faults) and any(fault.kind == "rest" for fault in self._faults.values())

    def fires(self, fault: ArmedFault, session: tuple[str, str, str] | None = None, api_key: str | None = None) -> bool:
        """Count a firing if the fault has firings left and its probability (under the seed) allows.

        `session` (id, organization, key) or `api_key` say where it fired, for the inspector's feed.
        """
        if fault.exhausted():
            return False
        probability = fault.rule.probability
        if probability < 1 and self.randomness.random("faults") >= probability:
            return False
        fault.fired += 1
        if self.tracker is not None and fault.id in self._faults:  # (a scenario's faults stay with its stream)
            self.tracker.touch(fault.id)
            self.on_change()
        if self.feed is not None:
            session_id, organization, key = session or (None, None, api_key)
            rule = self.describe(fault)
            if isinstance(rule.get("api_key"), str):
                rule["api_key"] = redact(rule["api_key"])  # type: ignore[arg-type]
            data = {"fault_id": fault.id, "kind": fault.kind, "fired": fault.fired, "rule": rule}
            self.feed.publish("fault.fired", session_id, organization, key, data)
        return True

    def match_rest(self, method: str, path: str, api_key: str | None) -> RestFault | None:
        for fault in self._faults.values():
            rule = fault.rule
            if fault.kind != "rest" or not isinstance(rule, RestFault) or fault.exhausted():
                continue
            if rule.method is not None and rule.method.upper() != method:
                continue
            if rule.path is not None and not fnmatch.fnmatchcase(path, rule.path):
                continue
            if rule.api_key is not None and rule.api_key != api_key:
                continue
            if self.fires(fault, api_key=api_key):
                return rule
        return None

    def stream_faults(self, api_key: str, session_id: str) -> list[ArmedFault]:
        return [
            fault
            for fault in self._faults.values()
            if isinstance(fault.rule, StreamFault)
            and fault.rule.api_key in (None, api_key)
            and fault.rule.session_id in (None, session_id)
        ]

    def firing_on_stream(
        self, armed: Iterable[ArmedFault], frames: int, finals: Callable[[], int], session: tuple[str, str, str]
    ) -> Iterator[StreamFault]:
        """The stream faults that fire now, in order, each counted as it is taken: lazily, so a `stall` the
        stream acts on before the next fault is looked at delays that look (`finals` is read at each one).
        `session` is (id, organization, key), for the inspector's feed."""
        for fault in armed:
            rule = fault.rule
            if not isinstance(rule, StreamFault) or fault.exhausted() or not rule.due(frames, finals()):
                continue
            if self.fires(fault, session):
                yield rule

    @staticmethod
    def describe(fault: ArmedFault) -> dict[str, object]:
        described: dict[str, object] = msgspec.to_builtins(fault.rule)
        return described


_ENCODER = msgspec.msgpack.Encoder()
_DOC_DECODER = msgspec.msgpack.Decoder(
    tuple[Literal["rest", "stream"], int, int, msgspec.Raw]
)  # kind, fired, order, rule
_REST_DECODER = msgspec.msgpack.Decoder(RestFault)
_STREAM_DECODER = msgspec.msgpack.Decoder(StreamFault)
