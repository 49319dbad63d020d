"""Server settings: one struct, filled from CLI flags and `MOCKGLOT_*` environment variables."""

from __future__ import annotations

import os
import re
import typing
import urllib.parse
from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from mockglot.wire import MAX_COUNT

MAX_WORKERS = 64
STATE_SCHEMES = ("redis", "rediss", "unix")
CONTROL_TOKEN = re.compile(r"[!-~]+")  # what `Authorization: Bearer <token>` can carry and compare byte for byte


class Settings(msgspec.Struct, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8080
    seed: Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)] | None = None  # as POST /_mockglot/seed takes
    keys: str | None = None
    strict: bool = False
    log_format: Literal["text", "json"] = "text"
    scenario: str = "order-change"
    fixtures: list[str] = msgspec.field(default_factory=list)
    engine: Literal["scripted", "vosk"] = "scripted"
    vosk_models: list[str] = msgspec.field(default_factory=list)
    output_pace: Literal["realtime", "instant"] = "realtime"
    vad_silence_ms: Annotated[int, Meta(ge=1, le=60_000)] = 500
    rate_limit: Annotated[int, Meta(ge=1, le=MAX_COUNT)] | None = None  # 0 would refuse every request: off is unset
    control_token: str | None = None
    pacing_checks: bool = False
    webhooks: list[str] = msgspec.field(default_factory=list)  # URL or URL#SECRET
    # Open sockets; None: 1,000 or the file limit less a reserve.
    max_connections: Annotated[int, Meta(ge=1, le=1_000_000)] | None = None
    header_timeout: Annotated[float, Meta(gt=0, le=3600)] = 10.0  # seconds to send a complete request head
    # Retention of ended sessions (with their journal, audio, recordings, analyses): the oldest go first once
    # there are more than `retain_sessions`, they hold more than `retain_mb`, or they ended `retain_minutes` ago.
    retain_sessions: Annotated[int, Meta(ge=1, le=10_000_000)] = 1000
    retain_minutes: Annotated[float, Meta(gt=0, le=525_600)] = 60.0
    retain_mb: Annotated[float, Meta(gt=0, le=1_048_576)] = 256.0
    # Where the state lives: "memory" (this process alone), or a Redis (or Valkey) URL that several workers and
    # machines share. `workers` processes share the listening socket; more than one needs a shared state.
    state: str = "memory"
    workers: Annotated[int, Meta(ge=1, le=MAX_WORKERS)] = 1


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
        sources[field.name] = f"{variable}={redact(raw) if field.name == 'state' else raw!r}"
    for name, value in overrides.items():
        if value is not None:
            values[name] = value
            sources[name] = f"--{name.replace('_', '-')} {redact(str(value)) if name == 'state' else value!r}"
    for field in msgspec.structs.fields(Settings):
        if field.name in values:
            try:
                values[field.name] = msgspec.convert(values[field.name], field.type, strict=False)
            except msgspec.ValidationError:
                raise ValueError(f"invalid setting {sources[field.name]}: {_expected(field.type)}") from None
    settings = Settings(**values)  # type: ignore[arg-type]  # each value converted to its field's type above
    if not 0 <= settings.port <= 65535:
        raise ValueError(f"invalid setting {sources['port']}: expected a port number from 0 to 65535")
    if settings.control_token is not None and not CONTROL_TOKEN.fullmatch(settings.control_token):
        shown = sources["control_token"].split(" ", 1)[0].split("=", 1)[0]  # never the token itself
        raise ValueError(
            f"invalid setting {shown}: a control token is one or more visible ASCII characters, no spaces (as an "
            "Authorization header carries it); an empty one would leave the control plane open"
        )
    if settings.state != "memory" and not state_url_ok(settings.state):
        raise ValueError(
            f"invalid setting {sources['state']}: expected memory or a Redis URL "
            "(redis://host:6379/0, rediss://host:6380/0 with TLS, unix:///run/redis.sock)"
        )
    if settings.workers > 1 and settings.state == "memory":
        where = sources["workers"]
        raise ValueError(
            f"{where}: several workers need a shared state, and the state is in memory (each worker would have its "
            "own sessions, keys and clock). Give them a Redis (or Valkey): --state redis://localhost:6379/0 "
            "(MOCKGLOT_STATE), or drop --workers to serve from one process"
        )
    return settings


def state_url_ok(url: str) -> bool:
    """Whether `url` is one redis-py can connect to: redis:// or rediss:// with a host (and an optional numeric
    database), or unix:// with a socket path."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # a port that is not a number raises
    except ValueError:
        return False
    if parts.scheme == "unix":
        return bool(parts.path) and not parts.netloc.rpartition("@")[2]
    if parts.scheme not in STATE_SCHEMES or not parts.hostname or port == 0:
        return False
    database = parts.path.removeprefix("/")
    return database == "" or (database.isascii() and database.isdigit())


def redact(url: str) -> str:
    """`url` fit to print and log: the password in its user part and a `password=` parameter become `***`
    (`redis://:secret@host/0` -> `redis://:***@host/0`, `redis://user:secret@host` -> `redis://user:***@host`).
    Everything up to the last `@` counts as the user part, so a password with an unescaped `/` or `@` is hidden
    too; a user part without a colon may be a bare password, so it is hidden whole."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    userinfo, at, rest = rest.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        rest = (f"{user}:***@" if colon else "***@") + rest
    return scheme + sep + re.sub(r"(?i)(\bpassword=)[^&#]*", r"\1***", rest)


def _expected(type_: object) -> str:
    """What a setting of this type takes, in words: `one of text, json`, `a whole number`, `a whole number from 1
    to 64`; an optional setting as its value's type (unset is never a bad value)."""
    arguments = typing.get_args(type_)
    if type(None) in arguments:
        type_ = next(a for a in arguments if a is not type(None))
    if typing.get_origin(type_) is Annotated:
        base, *metas = typing.get_args(type_)
        meta = next((m for m in metas if isinstance(m, Meta)), None)
        if base is int and meta is not None and meta.ge is not None and meta.le is not None:
            return f"expected a whole number from {meta.ge} to {meta.le}"
        return _expected(base) + (_bounds(meta) if meta is not None else "")
    if typing.get_origin(type_) is Literal:
        return "expected one of " + ", ".join(map(str, typing.get_args(type_)))
    if type_ is int:
        return "expected a whole number"
    if type_ is float:
        return "expected a number"
    return f"expected {type_}"


def _bounds(meta: Meta) -> str:
    low = f"above {meta.gt}" if meta.gt is not None else f"at least {meta.ge}" if meta.ge is not None else ""
    high = f"at most {meta.le}" if meta.le is not None else f"below {meta.lt}" if meta.lt is not None else ""
    return " " + " and ".join(b for b in (low, high) if b) if low or high else ""
