"""Turn request bodies into wire types, with errors a user can act on.

msgspec does the type checking; this module translates its findings into the contract's codes, names the
field at fault as a dotted path (`routing.phone_number`, `ai_agent.tools[0].name`), and finds unknown fields
so strict mode can reject them and lenient mode can warn.
"""

from __future__ import annotations

import codecs
import dataclasses
import functools
import re
import types
import typing
from typing import Any, TypeVar

import msgspec
import msgspec.inspect as mi

from mockglot.errors import ApiError
from mockglot.wire import LANGUAGES, MODES

T = TypeVar("T")

_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_KEY_AT = re.compile(r" - at `key` in `\$(?P<path>[^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`")

# Extra advice for fields whose rules are not obvious from the type error alone.
HINTS: dict[str, str] = {
    "mode": f"one of {', '.join(MODES)}",
    "source_language": f"a lowercase ISO-639-1 code from: {' '.join(LANGUAGES)} (omit it to auto-detect)",
    "target_language": f"a lowercase ISO-639-1 code from: {' '.join(LANGUAGES)} (omit it to auto-detect)",
    "routing.phone_number": "an E.164 number such as +4930123456",
    "routing.connection_id": "a connection id such as pcon_abc123",
    "routing.type": 'the string "sip"',
    "routing.sip.from_uri": "a SIP URI such as sip:alice@example.com",
    "routing.sip.headers": 'a map of X- headers to strings, e.g. {"X-Customer-Id": "42"}',
    "routing.direction": '"inbound" or "outbound"',
    "metadata": "an object of at most 50 string keys (1-40 characters) to string values (at most 500 characters)",
    "ai_agent.voice": "one of alloy, echo, fable, onyx, nova, shimmer",
    "ai_agent.temperature": "a number from 0 to 2",
    "ai_agent.knowledge_base_id": "an id such as kb_abc123",
    "agent_id": "an agent id such as agt_01HX…",
    "audio.encoding": '"mulaw" (the stream carries only 8 kHz mono mu-law; omit `audio` for the defaults)',
    "audio.sample_rate_hz": "8000 (the stream carries only 8 kHz mono mu-law; omit `audio` for the defaults)",
    "audio.channels": "1 (the stream carries only 8 kHz mono mu-law; omit `audio` for the defaults)",
    # POST /v1/sessions/{id}/analysis
    "include": "a list drawn from summary, sentiment, compliance, keywords, performance (omit it for all)",
    "profile": "a profile name of 1-64 characters (default: default)",
    # POST /v1/agents: the `ai_agent` fields at the top level
    "voice": "one of alloy, echo, fable, onyx, nova, shimmer",
    "temperature": "a number from 0 to 2",
    "knowledge_base_id": "an id such as kb_abc123",
}


def _path_to_param(path: str) -> str:
    """`$.routing.sip.from_uri` -> `routing.sip.from_uri`; list indexes stay as `[0]`."""
    return path.removeprefix(".")


def _code_for(param: str) -> str:
    root = param.split(".", 1)[0].split("[", 1)[0]
    if root == "mode":
        return "invalid_mode"
    if root in ("source_language", "target_language"):
        return "invalid_language_code"
    if root == "routing":
        return "invalid_routing"
    return "invalid_field_value"


def _hint(param: str) -> str | None:
    generic = re.sub(r"\[(\d+|\.\.\.)\]", "", param)
    if generic.startswith("overrides."):
        generic = "ai_agent." + generic.removeprefix("overrides.")
    return HINTS.get(generic)


@dataclasses.dataclass(frozen=True, slots=True)
class Finding:
    """msgspec's ValidationError taken apart: the one place that reads its message."""

    param: str | None  # the field at fault as a dotted path (`audio.payload`, `tools[0].name`); None: the whole value
    detail: str  # what is wrong, without the path (`Expected \`str\`, got \`int\``)
    missing: bool = False  # `param` is a required field that was left out
    in_key: bool = False  # a key of the map at `param` is at fault, not a value


def finding(exc: msgspec.ValidationError) -> Finding:
    """Where msgspec says the value is wrong, and what it says."""
    message = str(exc)
    if (match := _MISSING.match(message)) is not None:
        at = _AT.search(message)
        parent = _path_to_param(at["path"]) if at else ""
        return Finding(f"{parent}.{match['field']}" if parent else match["field"], message, missing=True)
    if (match := _KEY_AT.search(message)) is not None:
        return Finding(_path_to_param(match["path"]) or None, message[: match.start()], in_key=True)
    if (match := _AT.search(message)) is not None:
        return Finding(_path_to_param(match["path"]) or None, message[: match.start()])
    return Finding(None, message)


def error_from_validation(exc: msgspec.ValidationError, value: Any = None, type_: Any = None) -> ApiError:
    """The contract's error for msgspec's finding; with the checked `value` and its `type_`, a map entry
    at fault is named by its key (`metadata.order_id`) instead of msgspec's `metadata[...]`."""
    found = finding(exc)
    param, detail = found.param, found.detail
    if param is None:
        return ApiError("invalid_field_value", f"The request body is invalid: {detail}.", param=None)
    if found.missing:
        hint = _hint(param)
        return ApiError(
            "missing_required_field",
            f"`{param}` is required." + (f" It must be {hint}." if hint else ""),
            param=param,
        )
    if found.in_key:
        walked = _walk(param, value, type_) if type_ is not None else None
        key = _first_bad_entry(walked[1], walked[2], 0) if walked else None
        named = f"the key {key!r} is invalid" if key is not None else "a key is invalid"
        return ApiError(
            _code_for(param),
            _explain(param, f"{named}: {detail[0].lower()}{detail[1:]}"),
            param=walked[0] if walked else param,
        )
    walked = _walk(param, value, type_) if type_ is not None and "[...]" in param else None
    named = walked[0] if walked else param
    return ApiError(_code_for(param), _explain(named, detail, hint=_hint(param)), param=named)


def _explain(param: str, detail: str, *, hint: str | None = None) -> str:
    hint = hint or _hint(param)
    text = f"Invalid value for `{param}`: {detail[0].lower()}{detail[1:]}."
    return f"{text} It must be {hint}." if hint else text


_PARTS = re.compile(r"\[\.\.\.\]|\[\d+\]|[^.\[]+")


def _walk(param: str, value: Any, type_: Any) -> tuple[str, Any, Any] | None:
    """Follow msgspec's path through the checked value and its type: (path with map keys named, the value
    there, its type). msgspec calls a map entry `[...]`; the entry meant is the first whose value fails
    the map's value type. None when the path leads anywhere unexpected: the caller keeps msgspec's path."""
    named, node, hint = "", value, type_
    try:
        for part in _PARTS.findall(param):
            hint = _concrete(hint)
            if part == "[...]":
                key = _first_bad_entry(node, hint, 1)
                if key is None:
                    return None
                named, node, hint = f"{named}.{key}", node[key], typing.get_args(hint)[1]
            elif part.startswith("["):
                index = int(part[1:-1])
                named, node, hint = named + part, node[index], typing.get_args(hint)[0]
            else:
                field = next(f for f in msgspec.structs.fields(hint) if f.encode_name == part)
                named, node, hint = f"{named}.{part}" if named else part, node[part], field.type
        return named, node, _concrete(hint)
    except (KeyError, IndexError, TypeError, ValueError, StopIteration):
        return None


def _concrete(hint: Any) -> Any:
    """Strip `Annotated` and `| None` down to the type a value was checked against."""
    while True:
        origin = typing.get_origin(hint)
        if origin is typing.Annotated:
            hint = typing.get_args(hint)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [m for m in typing.get_args(hint) if m is not type(None)]
            if len(members) != 1:
                raise TypeError(hint)
            hint = members[0]
        else:
            return hint


def _first_bad_entry(node: Any, hint: Any, position: int) -> str | None:
    """The first key of the map `node` whose key (position 0) or value (position 1) fails `hint`'s type."""
    if not isinstance(node, dict) or typing.get_origin(hint) is not dict:
        return None
    expected = typing.get_args(hint)[position]
    for key, item in node.items():
        try:
            msgspec.convert(key if position == 0 else item, expected)
        except msgspec.ValidationError:
            return str(key)
    return None


def unknown_fields(value: Any, type_: Any) -> list[str]:
    """Dotted paths of every object key in `value` that `type_` does not define."""
    known = _flat_names(type_)
    if known is not None and isinstance(value, dict):  # as nearly every body is: known keys, no nested object
        for key, item in value.items():
            if key not in known or isinstance(item, (dict, list)):
                break
        else:
            return []
    return _unknown(value, _type_info(type_), "")


@functools.cache
def _flat_names(type_: Any) -> frozenset[str] | None:
    """A struct's field names as they are encoded (None for another type): what a body without nested objects or
    lists is checked against."""
    return frozenset(_fields_by_name(type_)) if isinstance(_type_info(type_), mi.StructType) else None


@functools.cache
def _type_info(type_: Any) -> mi.Type:
    """msgspec's description of a type: slow to build (it evaluates every annotation), so built once."""
    return mi.type_info(type_)


@functools.cache
def _fields_by_name(struct: type) -> dict[str, mi.Field]:
    info = _type_info(struct)
    assert isinstance(info, mi.StructType)
    return {f.encode_name: f for f in info.fields}


def _unknown(value: Any, info: mi.Type, path: str) -> list[str]:
    if isinstance(info, mi.Metadata):
        return _unknown(value, info.type, path)
    if isinstance(info, mi.UnionType):
        for member in info.types:
            if isinstance(member, (mi.StructType, mi.ListType, mi.Metadata)):
                in_member = _unknown(value, member, path)
                if in_member:
                    return in_member
        return []
    if isinstance(info, mi.StructType) and isinstance(value, dict):
        fields = _fields_by_name(info.cls)
        found: list[str] = []
        for key, item in value.items():
            field = fields.get(key)
            if field is None:
                found.append(f"{path}.{key}" if path else str(key))
            elif isinstance(item, (dict, list)):  # only containers can hold unknown fields
                found.extend(_unknown(item, field.type, f"{path}.{key}" if path else key))
        return found
    if isinstance(info, mi.DictType) and isinstance(value, dict):
        return [p for key, item in value.items() for p in _unknown(item, info.value_type, f"{path}.{key}")]
    if isinstance(info, mi.ListType) and isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _unknown(item, info.item_type, f"{path}[{i}]")]
    return []


def convert(value: Any, type_: type[T], *, strict: bool) -> tuple[T, list[str]]:
    """Validate a decoded JSON object as `type_`; returns it with the unknown fields that were ignored."""
    unknown = unknown_fields(value, type_)
    if unknown and strict:
        raise ApiError(
            "invalid_field_value",
            f"Unknown field `{unknown[0]}`: remove it. Strict validation (the server's --strict, and every "
            "scenario file) rejects fields that are not defined.",
            param=unknown[0],
        )
    try:
        return msgspec.convert(value, type_), unknown
    except msgspec.ValidationError as exc:
        raise error_from_validation(exc, value, type_) from None


_ESCAPE = re.compile(rb"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)  # one backslash escape: `\\` is one, not two starts
GZIP_MAGIC = b"\x1f\x8b"


def malformed_json(text: bytes | str, exc: msgspec.DecodeError) -> str:
    """What is wrong with JSON text that msgspec refused, said so that it can be fixed: msgspec's own words mislead
    for a few common mistakes (a gzip-compressed or UTF-16 body or a byte order mark is an "invalid character
    (byte 0)", a lone surrogate escape "truncated"). For the error path only: it reads the whole text."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if raw.startswith(GZIP_MAGIC):
        return (
            "it looks gzip-compressed (it starts with 1f 8b, gzip's magic number): send it as plain JSON, "
            "without compressing it and without Content-Encoding"
        )
    if raw.startswith(codecs.BOM_UTF8):
        return "it starts with a byte order mark (U+FEFF, bytes EF BB BF): send the JSON without it"
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or (len(raw) >= 2 and b"\x00" in raw[:2]):
        return "it looks UTF-16 encoded (a zero byte beside each ASCII character): send JSON as UTF-8"
    detail = str(exc)
    if ("truncated" in detail or "surrogate" in detail) and (lone := _lone_surrogate(raw)) is not None:
        return (
            f"the escape {lone[0].decode()} (at byte {lone.start()}) is half of a UTF-16 surrogate pair, which is "
            "no character on its own (a string cut inside a character such as an emoji leaves one): send whole "
            "characters, as UTF-8 or escaped as both halves of the pair (\\ud83d\\ude00)"
        )
    return detail


def _lone_surrogate(raw: bytes) -> re.Match[bytes] | None:
    """The first `\\uD800`-`\\uDFFF` escape that is not half of an adjacent high-low pair, if any."""
    high: re.Match[bytes] | None = None
    for escape in _ESCAPE.finditer(raw):
        code = int(escape[1], 16) if escape[1] else None
        is_low = code is not None and 0xDC00 <= code <= 0xDFFF
        if high is not None:
            if is_low and escape.start() == high.end():
                high = None
                continue
            return high
        if code is not None and 0xD800 <= code <= 0xDBFF:
            high = escape
        elif is_low:
            return escape
    return high
