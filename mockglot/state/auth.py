"""API keys: who is calling, what they may do, and what they have left to spend.

Open mode accepts every well-formed key as its own organization, so parallel test runs that use different keys
never see each other. Configured mode (a keys file) accepts only the listed keys.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import msgspec
import yaml

from mockglot.errors import ApiError

KEY_PATTERN = re.compile(r"^sk_(live|test)_[A-Za-z0-9]{8,}$")
SCOPES = (
    "sessions:read",
    "sessions:write",
    "recordings:read",
    "analyses:read",
    "analyses:write",
    "agents:read",
    "agents:write",
)
NOMINAL_CREDITS = 1_000_000  # what the headers report for a key with unlimited credits

Environment = Literal["live", "test"]
Owner = tuple[str, Environment]  # (organization, environment): the unit that sees its own sessions


class KeyConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    key: str
    organization: str
    credits: int | None = None
    scopes: list[str] | None = None
    revoked: bool = False
    inactive: bool = False
    rate_limit: int | None = None


class KeysFile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    keys: list[KeyConfig]


@dataclass(slots=True)
class ApiKey:
    key: str
    organization: str
    environment: Environment
    credits: int | None = None
    credits_used: int = 0
    scopes: frozenset[str] = frozenset(SCOPES)
    revoked: bool = False
    inactive: bool = False
    rate_limit: int | None = None
    configured: dict[str, object] = field(default_factory=dict)

    @property
    def owner(self) -> Owner:
        return (self.organization, self.environment)

    @property
    def credits_remaining(self) -> int:
        total = NOMINAL_CREDITS if self.credits is None else self.credits
        return max(total - self.credits_used, 0)

    def charge(self) -> None:
        """Spend one credit, or refuse with 402 when a configured balance is exhausted."""
        if self.credits is not None and self.credits_used >= self.credits:
            raise ApiError(
                "insufficient_api_credits",
                f"This key has used all {self.credits} of its API credits. Give it more through the control "
                "plane (POST /_mockglot/keys) or in the keys file.",
            )
        self.credits_used += 1

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise ApiError(
                "insufficient_permissions",
                f"This key lacks the `{scope}` scope (it has: {', '.join(sorted(self.scopes)) or 'none'}). "
                "Add the scope to the key in the keys file or through the control plane.",
            )


def redact(secret: str) -> str:
    """Enough of a key to recognise it, never enough to use it."""
    if len(secret) <= 12:
        return secret[:3] + "…"
    return f"{secret[:8]}…{secret[-4:]}"


def load_keys_file(path: str | Path) -> list[KeyConfig]:
    """Read a keys file (YAML or JSON), failing with a message that names the file and the field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        keys = msgspec.convert(raw, KeysFile).keys
    except OSError as exc:
        raise ValueError(f"cannot read keys file {path}: {exc.strerror}") from None
    except (yaml.YAMLError, msgspec.ValidationError) as exc:
        raise ValueError(f"keys file {path} is invalid: {exc}") from None
    for entry in keys:
        if not KEY_PATTERN.match(entry.key):
            raise ValueError(f"keys file {path}: `{redact(entry.key)}` is not of the form sk_live_…/sk_test_…")
        unknown = set(entry.scopes or ()) - set(SCOPES)
        if unknown:
            raise ValueError(f"keys file {path}: unknown scopes {sorted(unknown)}; known: {list(SCOPES)}")
    return keys


class KeyStore:
    def __init__(self, configured: list[KeyConfig] | None = None) -> None:
        self._configured = configured
        self._keys: dict[str, ApiKey] = {}
        self.reset()

    @property
    def open_mode(self) -> bool:
        return self._configured is None

    def reset(self, organization: str | None = None) -> None:
        """Back to the configured state: balances, flags and scopes as the keys file (or open mode) gives."""
        if organization is None:
            self._keys = {}
        else:
            self._keys = {k: v for k, v in self._keys.items() if v.organization != organization}
        for entry in self._configured or ():
            if organization is None or entry.organization == organization:
                self._keys[entry.key] = _key_from_config(entry)

    def authenticate(self, authorization: str | None, x_api_key: str | None) -> ApiKey:
        secret = _presented_key(authorization, x_api_key)
        key = self._keys.get(secret)  # a key is only stored once it has passed the pattern
        if key is None:
            if not KEY_PATTERN.match(secret):
                raise ApiError("invalid_api_key", _malformed_message(secret))
            if not self.open_mode:
                raise ApiError(
                    "invalid_api_key",
                    f"Unknown API key {redact(secret)}. This server only accepts the keys listed in its "
                    "keys file (--keys); add this one there or use a listed key.",
                )
            key = self.ensure(secret)
        if key.revoked:
            raise ApiError(
                "revoked_api_key",
                f"The API key {redact(secret)} has been revoked. Use another key, or un-revoke it through "
                "the control plane.",
            )
        if key.inactive:
            raise ApiError(
                "organization_inactive",
                f"The organization `{key.organization}` of this key is inactive. Reactivate it through the "
                "control plane or the keys file.",
            )
        return key

    def ensure(self, secret: str) -> ApiKey:
        """The key's record, created as its own organization in open mode."""
        key = self._keys.get(secret)
        if key is None:
            environment: Environment = "live" if secret.startswith("sk_live_") else "test"
            organization = "org_" + hashlib.sha256(secret.encode()).hexdigest()[:20]
            key = self._keys[secret] = ApiKey(key=secret, organization=organization, environment=environment)
        return key

    def get(self, secret: str) -> ApiKey | None:
        return self._keys.get(secret)

    def all(self) -> list[ApiKey]:
        return list(self._keys.values())


def _key_from_config(entry: KeyConfig) -> ApiKey:
    return ApiKey(
        key=entry.key,
        organization=entry.organization,
        environment="live" if entry.key.startswith("sk_live_") else "test",
        credits=entry.credits,
        scopes=frozenset(SCOPES if entry.scopes is None else entry.scopes),
        revoked=entry.revoked,
        inactive=entry.inactive,
        rate_limit=entry.rate_limit,
    )


def _presented_key(authorization: str | None, x_api_key: str | None) -> str:
    if authorization is not None:
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise ApiError(
                "invalid_api_key",
                "The Authorization header must read `Bearer sk_test_…` (or `Bearer sk_live_…`).",
            )
        return credentials.strip()
    if x_api_key is not None:
        return x_api_key.strip()
    raise ApiError(
        "invalid_api_key",
        "No API key provided. Send it as `Authorization: Bearer sk_test_…` or in the `X-API-Key` header.",
    )


def _malformed_message(secret: str) -> str:
    if secret.startswith("kst_"):
        return (
            "Stream tokens (kst_…) are only accepted on the WebSocket. Use your API key (sk_test_… or "
            "sk_live_…) for REST calls."
        )
    return (
        f"The API key {redact(secret)!r} is malformed: a key is `sk_test_` or `sk_live_` followed by at least "
        "8 letters or digits."
    )
