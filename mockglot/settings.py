"""Server settings: one struct, filled from CLI flags and `MOCKGLOT_*` environment variables."""

from __future__ import annotations

import os
import typing
from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec
from msgspec import Meta


class Settings(msgspec.Struct, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8080
    seed: int | None = None
    keys: str | None = None
    strict: bool = False
    log_format: Literal["text", "json"] = "text"
    scenario: str = "order-change"
    fixtures: list[str] = msgspec.field(default_factory=list)
    engine: Literal["scripted", "vosk"] = "scripted"
    vosk_models: list[str] = msgspec.field(default_factory=list)
    output_pace: Literal["realtime", "instant"] = "realtime"
    vad_silence_ms: int = 500
    rate_limit: int | None = None
    control_token: str | None = None
    pacing_checks: bool = False
    webhooks: list[str] = msgspec.field(default_factory=list)  # URL or URL#SECRET
    max_connections: int | None = None  # open sockets; None: 1,000 or the file limit less a reserve
    header_timeout: float = 10.0  # seconds a socket has to send a complete request head
    # Retention of ended sessions (with their journal, audio, recordings, analyses): the oldest go first once
    # there are more than `retain_sessions`, they hold more than `retain_mb`, or they ended `retain_minutes` ago.
    retain_sessions: Annotated[int, Meta(ge=1, le=10_000_000)] = 1000
    retain_minutes: Annotated[float, Meta(gt=0, le=525_600)] = 60.0
    retain_mb: Annotated[float, Meta(gt=0, le=1_048_576)] = 256.0


# Each setting's environment variable and how to read it from a string.
ENV_PREFIX = "MOCKGLOT_"
_LIST_FIELDS = {"fixtures", "vosk_models", "webhooks"}
_BOOL_TRUE = {"1", "true", "yes", "on"}


def from_env(environ: Mapping[str, str] = os.environ, **overrides: object) -> Settings:
    """Settings from the environment, then explicit overrides (CLI flags) on top. A bad value raises ValueError
    naming where it came from (`MOCKGLOT_PORT='abc'` or `--port`), the value, and what would be valid."""
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    for field in msgspec.structs.fields(Settings):
        variable = ENV_PREFIX + field.name.upper()
        raw = environ.get(variable)
        if raw is None or raw == "":
            continue
        if field.name in _LIST_FIELDS:
            values[field.name] = [item.strip() for item in raw.split(",") if item.strip()]
        elif field.type is bool:
            values[field.name] = raw.strip().lower() in _BOOL_TRUE
        else:
            values[field.name] = raw
        sources[field.name] = f"{variable}={raw!r}"
    for name, value in overrides.items():
        if value is not None:
            values[name] = value
            sources[name] = f"--{name.replace('_', '-')} {value!r}"
    for field in msgspec.structs.fields(Settings):
        if field.name in values:
            try:
                values[field.name] = msgspec.convert(values[field.name], field.type, strict=False)
            except msgspec.ValidationError:
                raise ValueError(f"invalid setting {sources[field.name]}: {_expected(field.type)}") from None
    settings = Settings(**values)  # type: ignore[arg-type]  # each value converted to its field's type above
    if not 0 <= settings.port <= 65535:
        raise ValueError(f"invalid setting {sources['port']}: expected a port number from 0 to 65535")
    return settings


def _expected(type_: object) -> str:
    """What a setting of this type takes, in words: `one of text, json`, `a whole number`."""
    if typing.get_origin(type_) is Literal:
        return "expected one of " + ", ".join(map(str, typing.get_args(type_)))
    if type_ is int or [a for a in typing.get_args(type_) if a is not type(None)] == [int]:
        return "expected a whole number"
    return f"expected {type_}"
