"""API keys: who is calling, what they may do, and what they have left to spend.

Open mode accepts every well-formed key as its own organization, so parallel test runs that use different keys
never see each other. Configured mode (a keys file) accepts only the listed keys.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from mockglot.errors import ApiError
from mockglot.state.replica import DocTracker, SharedDocs
from mockglot.wire import MAX_COUNT, MAX_CREDITS

KEY_PATTERN = re.compile(r"^sk_(live|test)_[A-Za-z0-9]{8,}$")
SCOPES = (  # (r2) the documented names, then the emulator's own
    "sessions:read",
    "sessions:write",
    "recordings:read",
    "analysis:read",
    "analysis:write",
    "agents:read",
    "agents:write",
    "recordings:delete",
)
RENAMED_SCOPES = {"analyses:read": "analysis:read", "analyses:write": "analysis:write"}  # before contract r2
MAX_SEEN_KEYS = 10_000  # open-mode keys remembered; beyond, the oldest is forgotten
NOMINAL_CREDITS = 1_000_000  # what the headers report for a key with unlimited credits

Environment = Literal["live", "test"]
Owner = tuple[str, Environment]  # (organization, environment): the unit that sees its own sessions


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request presents, read in this one place for REST, the control plane and the stream."""

    authorization: str | None  # the header as sent
    bearer: str | None  # its value when it reads `Bearer <value>`
    x_api_key: str | None
    token: str | None = None  # `?token=`: the stream's alternative to the header

    @classmethod
    def read(cls, headers: Mapping[str, str], query: Mapping[str, str] | None = None) -> Credentials:
        """`headers` with lowercase names (Starlette's `Headers` are)."""
        authorization = headers.get("authorization")
        bearer = None
        if authorization is not None:
            scheme, _, value = authorization.strip().partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                bearer = value.strip()
        x_api_key = headers.get("x-api-key")
        token = query.get("token") if query is not None else None
        return cls(authorization, bearer, x_api_key.strip() if x_api_key is not None else None, token or None)

    @property
    def api_key(self) -> str | None:
        """The API key as presented (valid or not): for the journal and fault matching."""
        return self.bearer if self.bearer is not None else self.x_api_key

    @property
    def stream_token(self) -> str | None:
        return self.token or self.bearer


class KeyConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    key: str
    organization: str
    credits: Annotated[int, Meta(ge=0, le=MAX_CREDITS)] | None = None  # the ranges POST /_mockglot/keys takes
    scopes: list[str] | None = None
    revoked: bool = False
    inactive: bool = False
    rate_limit: Annotated[int, Meta(ge=1, le=MAX_COUNT)] | None = None  # 0 would refuse every request


class KeysFile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    keys: list[KeyConfig]


@dataclass(slots=True)
class Balance:
    """(r2) An organization's API credits: every key of the organization draws on, and reports, this one."""

    credits: int | None = None  # None: unlimited (the headers report NOMINAL_CREDITS)
    used: int = 0


@dataclass(slots=True)
class ApiKey:
    key: str
    organization: str
    environment: Environment
    balance: Balance = field(default_factory=Balance)
    scopes: frozenset[str] = frozenset(SCOPES)
    revoked: bool = False
    inactive: bool = False
    rate_limit: int | None = None
    pinned: bool = False  # from the keys file or changed through the control plane: never forgotten for space

    @property
    def owner(self) -> Owner:
        return (self.organization, self.environment)

    @property
    def credits(self) -> int | None:
        return self.balance.credits

    @property
    def credits_used(self) -> int:
        return self.balance.used

    @property
    def credits_remaining(self) -> int:
        total = NOMINAL_CREDITS if self.balance.credits is None else self.balance.credits
        return max(total - self.balance.used, 0)

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
    import yaml  # here, not at import: only a server with a keys file needs it

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        keys = msgspec.convert(raw, KeysFile).keys
    except OSError as exc:
        raise ValueError(f"cannot read keys file {path}: {exc.strerror}") from None
    except (yaml.YAMLError, msgspec.ValidationError) as exc:
        raise ValueError(f"keys file {path} is invalid: {exc}") from None
    seen: set[str] = set()
    for entry in keys:
        if not KEY_PATTERN.match(entry.key):
            raise ValueError(f"keys file {path}: `{redact(entry.key)}` is not of the form sk_live_…/sk_test_…")
        if entry.key in seen:  # which entry would win is anyone's guess
            raise ValueError(f"keys file {path}: `{redact(entry.key)}` is listed twice; list each key once")
        seen.add(entry.key)
        unknown = set(entry.scopes or ()) - set(SCOPES)
        if unknown:
            raise ValueError(f"keys file {path}: {unknown_scopes_message(unknown)}")
    credits: dict[str, int | None] = {}
    for entry in keys:
        if entry.credits is None:
            continue
        if credits.setdefault(entry.organization, entry.credits) != entry.credits:
            raise ValueError(
                f"keys file {path}: the keys of organization `{entry.organization}` give different `credits` "
                f"({credits[entry.organization]} and {entry.credits}); credits belong to the organization, so "
                "give the balance on one of its keys (or the same number on each)."
            )
    return keys


def unknown_scopes_message(unknown: set[str]) -> str:
    renamed = [f"{old} is now {new}" for old, new in RENAMED_SCOPES.items() if old in unknown]
    advice = f" ({'; '.join(renamed)})" if renamed else ""
    return f"unknown scopes {sorted(unknown)}{advice}; known: {', '.join(SCOPES)}"


def open_organization(secret: str) -> str:
    """The organization an open-mode key is its own: derived from the key, so a forgotten key comes back to it."""
    return "org_" + hashlib.sha256(secret.encode()).hexdigest()[:20]


class KeyStore(SharedDocs):
    """Keys by secret and by organization (so one organization's reset costs only its own keys).

    In open mode every well-formed key is remembered when first seen; at most `MAX_SEEN_KEYS` of them, the
    oldest forgotten first (a forgotten key comes back as new, in the same organization, when it is next used).
    """

    def __init__(self, configured: list[KeyConfig] | None = None) -> None:
        self._configured = configured
        self._keys: dict[str, ApiKey] = {}
        self._balances: dict[str, Balance] = {}  # organization -> its credits
        self._by_org: dict[str, set[str]] = {}
        self._seen: dict[str, None] = {}  # open-mode keys that may be forgotten for space, oldest first
        self.tracker: DocTracker | None = None  # shared between workers: one document per organization
        self.reset()

    # --- shared between workers (see state/replica.py) ---------------------------------------------------

    name = "keys"

    def share(self) -> None:
        self.tracker = DocTracker(self._encode)

    def _touch(self, organization: str) -> None:
        if self.tracker is not None:
            self.tracker.touch(organization)

    def _encode(self, organization: str) -> bytes | None:
        secrets = self._by_org.get(organization)
        balance = self._balances.get(organization)
        if not secrets and balance is None:
            return None
        keys = [_KeyDoc.of(self._keys[secret]) for secret in sorted(secrets or ())]
        balance = balance or Balance()
        return _ORG_ENCODER.encode(_OrgDoc(keys, balance.credits, balance.used))

    def load(self, organization: str, data: bytes | None) -> None:
        if self.tracker is not None:
            self.tracker.loaded(organization, data)
        for secret in self._by_org.pop(organization, ()):
            self._keys.pop(secret, None)
            self._seen.pop(secret, None)
        if data is None:
            self._balances.pop(organization, None)
            return
        doc = _ORG_DECODER.decode(data)
        balance = self.balance(organization)  # in place: keys of this organization hold it
        balance.credits, balance.used = doc.credits, doc.used
        for entry in doc.keys:
            key = self._add(entry.to_key(balance))
            if not key.pinned:
                self._seen[key.key] = None

    @property
    def open_mode(self) -> bool:
        return self._configured is None

    def reset(self, organization: str | None = None) -> None:
        """Back to the configured state: balances, flags and scopes as the keys file (or open mode) gives."""
        if organization is None:
            self._keys.clear()
            self._balances.clear()
            self._by_org.clear()
            self._seen.clear()
        else:
            self._touch(organization)
            for secret in self._by_org.pop(organization, ()):
                self._keys.pop(secret, None)
                self._seen.pop(secret, None)
            self._balances.pop(organization, None)
        for entry in self._configured or ():
            if organization is None or entry.organization == organization:
                key = self._add(_key_from_config(entry, self.balance(entry.organization)))
                if entry.credits is not None:
                    key.balance.credits = entry.credits

    def _add(self, key: ApiKey) -> ApiKey:
        self._touch(key.organization)
        self._keys[key.key] = key
        self._by_org.setdefault(key.organization, set()).add(key.key)
        return key

    def _forget(self, secret: str) -> None:
        key = self._keys.pop(secret, None)
        self._seen.pop(secret, None)
        if key is not None:
            self._touch(key.organization)
            secrets = self._by_org.get(key.organization)
            if secrets is not None:
                secrets.discard(secret)
                if not secrets:
                    del self._by_org[key.organization]

    def of(self, organization: str) -> set[str]:
        """The organization's keys (secrets)."""
        return set(self._by_org.get(organization, ()))

    def pin(self, key: ApiKey, organization: str | None = None) -> None:
        """Keep a key the control plane changed (never forgotten for space), moving it to `organization`."""
        key.pinned = True
        self._seen.pop(key.key, None)
        if organization is not None and organization != key.organization:
            self._forget(key.key)
            self.move(key, organization)
            self._add(key)

    def authenticate(self, credentials: Credentials) -> ApiKey:
        secret = _presented_key(credentials)
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

    def charge(self, key: ApiKey) -> None:
        """Spend one of the key's organization's credits, or refuse with 402 when a configured balance is
        exhausted. Here, not on the key: the organization's document changes, and is shared with it."""
        balance = key.balance
        if balance.credits is not None and balance.used >= balance.credits:
            raise ApiError(
                "insufficient_api_credits",
                f"Organization `{key.organization}` has used all {balance.credits} of its API credits (they "
                "are shared by all its keys). Give it more through the control plane (POST /_mockglot/keys) "
                "or in the keys file.",
            )
        balance.used += 1
        self._touch(key.organization)

    def ensure(self, secret: str) -> ApiKey:
        """The key's record, created as its own organization in open mode."""
        key = self._keys.get(secret)
        if key is None:
            environment: Environment = "live" if secret.startswith("sk_live_") else "test"
            organization = open_organization(secret)
            key = self._add(
                ApiKey(
                    key=secret, organization=organization, environment=environment, balance=self.balance(organization)
                )
            )
            self._seen[secret] = None
            while len(self._seen) > MAX_SEEN_KEYS:
                self._forget(next(iter(self._seen)))
        return key

    def organization_of(self, secret: str) -> str | None:
        """The key's organization: a known key's, or in open mode the one a well-formed key is (or was, if the
        store has forgotten it for space, while its sessions remain) its own; None for a key no organization has."""
        key = self._keys.get(secret)
        if key is not None:
            return key.organization
        return open_organization(secret) if self.open_mode and KEY_PATTERN.match(secret) else None

    def balance(self, organization: str) -> Balance:
        """The organization's shared credits (unlimited until configured)."""
        balance = self._balances.get(organization)
        if balance is None:
            balance = self._balances[organization] = Balance()
        self._touch(organization)
        return balance

    def move(self, key: ApiKey, organization: str) -> None:
        """Put a key in another organization: from now on it draws on that organization's credits."""
        key.organization = organization
        key.balance = self.balance(organization)

    def get(self, secret: str) -> ApiKey | None:
        key = self._keys.get(secret)
        if key is not None:
            self._touch(key.organization)  # the control plane may change it
        return key

    def all(self) -> list[ApiKey]:
        if self.tracker is not None:
            for organization in self._by_org:
                self.tracker.touch(organization)
        return list(self._keys.values())


class _KeyDoc(msgspec.Struct, array_like=True):
    key: str
    organization: str
    environment: Environment
    scopes: list[str]
    revoked: bool
    inactive: bool
    rate_limit: int | None
    pinned: bool

    @classmethod
    def of(cls, key: ApiKey) -> _KeyDoc:
        return cls(
            key.key,
            key.organization,
            key.environment,
            sorted(key.scopes),
            key.revoked,
            key.inactive,
            key.rate_limit,
            key.pinned,
        )

    def to_key(self, balance: Balance) -> ApiKey:
        return ApiKey(
            key=self.key,
            organization=self.organization,
            environment=self.environment,
            balance=balance,
            scopes=frozenset(self.scopes),
            revoked=self.revoked,
            inactive=self.inactive,
            rate_limit=self.rate_limit,
            pinned=self.pinned,
        )


class _OrgDoc(msgspec.Struct, array_like=True):
    """An organization's keys and its credits, as workers share them."""

    keys: list[_KeyDoc]
    credits: int | None
    used: int


_ORG_ENCODER = msgspec.msgpack.Encoder()
_ORG_DECODER = msgspec.msgpack.Decoder(_OrgDoc)


def _key_from_config(entry: KeyConfig, balance: Balance) -> ApiKey:
    return ApiKey(
        key=entry.key,
        organization=entry.organization,
        environment="live" if entry.key.startswith("sk_live_") else "test",
        balance=balance,
        scopes=frozenset(SCOPES if entry.scopes is None else entry.scopes),
        revoked=entry.revoked,
        inactive=entry.inactive,
        rate_limit=entry.rate_limit,
        pinned=True,
    )


def _presented_key(credentials: Credentials) -> str:
    if credentials.authorization is not None:
        if credentials.bearer is None:
            raise ApiError(
                "invalid_api_key",
                "The Authorization header must read `Bearer sk_test_…` (or `Bearer sk_live_…`).",
            )
        return credentials.bearer
    if credentials.x_api_key is not None:
        return credentials.x_api_key
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
