"""Every frame the server sends in the test suite, checked against the AsyncAPI document (`mockglot.asyncapi`).

`watch()` wraps the stream's two ways out (`Connection.send_encoded` for every server frame, as sent, `reject`
for a failed connect); each frame's JSON is validated against its message's payload schema in the document, made strict
(no properties beyond those listed), by `jsonschema`. Findings are collected here, and the conftest fails the
test that produced them. Frames a test injects through the control plane are the test's, not the server's.
"""

from __future__ import annotations

import copy
import functools
import threading
from typing import Any

import jsonschema
import msgspec

from mockglot import asyncapi
from mockglot.api import stream

_lock = threading.Lock()
violations: list[str] = []
checked = 0


def strict(schema: Any) -> Any:
    """A copy in which every object schema with `properties` allows no others."""
    if isinstance(schema, dict):
        out = {key: strict(value) for key, value in schema.items()}
        if out.get("type") == "object" and "properties" in out:
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


@functools.cache
def validators() -> dict[str, jsonschema.protocols.Validator]:
    """One validator per server frame `type`, from the document's messages and its components."""
    doc = asyncapi.document()
    components = strict(copy.deepcopy(doc["components"]))
    out = {}
    for ref in doc["operations"]["sendServerFrames"]["messages"]:
        message = doc["components"]["messages"][ref["$ref"].rsplit("/", 1)[1]]
        schema = {**components["messages"][ref["$ref"].rsplit("/", 1)[1]]["payload"], "components": components}
        validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        out[message["name"]] = validator_class(schema)
    return out


def problems(text: str) -> list[str]:
    """Why this frame does not match the document (empty: it does)."""
    try:
        frame = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        return [f"not JSON: {exc}"]
    kind = frame.get("type") if isinstance(frame, dict) else None
    validator = validators().get(kind) if isinstance(kind, str) else None
    if validator is None:
        return [f"`type` {kind!r} is no server message of the AsyncAPI document"]
    return [f"{'/'.join(map(str, e.absolute_path)) or '(frame)'}: {e.message}" for e in validator.iter_errors(frame)]


def record(text: str) -> None:
    global checked
    found = problems(text)
    with _lock:
        checked += 1
        if found:
            violations.append(f"{text[:300]}\n    " + "\n    ".join(found))


def watch() -> None:
    """Validate every frame the stream sends from now on (idempotent)."""
    if getattr(stream.Connection.send_encoded, "__wrapped_by_frame_schema__", False):
        return
    send, reject = stream.Connection.send_encoded, stream.reject

    def checked_send(self: stream.Connection, kind: str, text: str) -> None:
        send(self, kind, text)
        record(text)

    async def checked_reject(websocket: Any, session_id: str, exc: Any) -> None:
        record(msgspec.json.encode(stream.frame_error(session_id, exc)).decode())
        await reject(websocket, session_id, exc)

    checked_send.__wrapped_by_frame_schema__ = True  # type: ignore[attr-defined]
    stream.Connection.send_encoded = checked_send  # type: ignore[method-assign]
    stream.reject = checked_reject


def take() -> list[str]:
    with _lock:
        found = violations[:]
        violations.clear()
    return found
