"""Turn request bodies into wire types, with errors a user can act on.

msgspec does the type checking; this module translates its findings into the contract's codes, names the
field at fault as a dotted path (`routing.phone_number`, `ai_agent.tools[0].name`), and finds unknown fields
so strict mode can reject them and lenient mode can warn.
"""

from __future__ import annotations

import re
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
    generic = re.sub(r"\[\d+\]", "", param)
    if generic.startswith("overrides."):
        generic = "ai_agent." + generic.removeprefix("overrides.")
    return HINTS.get(generic)


def error_from_validation(exc: msgspec.ValidationError) -> ApiError:
    message = str(exc)
    if (match := _MISSING.match(message)) is not None:
        at = _AT.search(message)
        parent = _path_to_param(at["path"]) if at else ""
        param = f"{parent}.{match['field']}" if parent else match["field"]
        hint = _hint(param)
        return ApiError(
            "missing_required_field",
            f"`{param}` is required." + (f" It must be {hint}." if hint else ""),
            param=param,
        )
    if (match := _KEY_AT.search(message)) is not None:
        param = _path_to_param(match["path"])
        detail = message[: match.start()]
        return ApiError(
            _code_for(param),
            _explain(param, f"a key is invalid: {detail[0].lower()}{detail[1:]}"),
            param=param,
        )
    if (match := _AT.search(message)) is not None:
        param = _path_to_param(match["path"])
        detail = message[: match.start()]
        return ApiError(_code_for(param), _explain(param, detail), param=param)
    return ApiError("invalid_field_value", f"The request body is invalid: {message}.", param=None)


def _explain(param: str, detail: str) -> str:
    hint = _hint(param)
    text = f"Invalid value for `{param}`: {detail[0].lower()}{detail[1:]}."
    return f"{text} It must be {hint}." if hint else text


def unknown_fields(value: Any, type_: Any) -> list[str]:
    """Dotted paths of every object key in `value` that `type_` does not define."""
    return _unknown(value, mi.type_info(type_), "")


def _unknown(value: Any, info: mi.Type, path: str) -> list[str]:
    if isinstance(info, mi.Metadata):
        return _unknown(value, info.type, path)
    if isinstance(info, mi.UnionType):
        for member in info.types:
            if isinstance(member, (mi.StructType, mi.ListType, mi.Metadata)):
                found = _unknown(value, member, path)
                if found:
                    return found
        return []
    if isinstance(info, mi.StructType) and isinstance(value, dict):
        fields = {f.encode_name: f for f in info.fields}
        found: list[str] = []
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            if key not in fields:
                found.append(child)
            else:
                found.extend(_unknown(item, fields[key].type, child))
        return found
    if isinstance(info, mi.ListType) and isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _unknown(item, info.item_type, f"{path}[{i}]")]
    return []


def convert(value: Any, type_: type[T], *, strict: bool) -> tuple[T, list[str]]:
    """Validate a decoded JSON object as `type_`; returns it with the unknown fields that were ignored."""
    unknown = unknown_fields(value, type_)
    if unknown and strict:
        raise ApiError(
            "invalid_field_value",
            f"Unknown field `{unknown[0]}`. Remove it: this server runs in strict mode (--strict), which "
            "rejects fields the API does not define.",
            param=unknown[0],
        )
    try:
        return msgspec.convert(value, type_), unknown
    except msgspec.ValidationError as exc:
        raise error_from_validation(exc) from None
