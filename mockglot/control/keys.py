"""API keys: balances, scopes, and the revoked and inactive flags."""

from __future__ import annotations

from mockglot import wire
from mockglot.control.endpoint import ControlContext, Endpoint, Reply
from mockglot.errors import ApiError
from mockglot.state.auth import KEY_PATTERN, SCOPES, ApiKey, redact, unknown_scopes_message


def info(key: ApiKey) -> wire.KeyInfo:
    return wire.KeyInfo(
        key=redact(key.key),
        organization=key.organization,
        environment=key.environment,
        credits=key.credits,
        credits_used=key.credits_used,
        credits_remaining=key.credits_remaining,
        scopes=sorted(key.scopes),
        revoked=key.revoked,
        inactive=key.inactive,
        rate_limit=key.rate_limit,
    )


async def list_keys(ctx: ControlContext) -> Reply:
    return Reply(200, wire.ListOf(data=[info(k) for k in ctx.state.keys.all()]))


async def update_key(ctx: ControlContext) -> Reply:
    """Create or change a key; in configured mode this also admits a key the keys file did not list."""
    request = ctx.parse(wire.KeyUpdate)
    if not KEY_PATTERN.match(request.key):
        raise ApiError(
            "invalid_field_value", "`key` must look like sk_test_… or sk_live_… (8+ letters or digits).", param="key"
        )
    unknown = set(request.scopes or ()) - set(SCOPES)
    if unknown:
        message = unknown_scopes_message(unknown)
        raise ApiError("invalid_field_value", f"{message[0].upper()}{message[1:]}.", param="scopes")
    key = ctx.state.keys.ensure(request.key)
    ctx.state.keys.pin(key, request.organization)
    if request.unlimited_credits:
        key.balance.credits = None
    elif request.credits is not None:  # (r2) the organization's balance: every key of it sees the change
        key.balance.credits, key.balance.used = request.credits, 0
    if request.scopes is not None:
        key.scopes = frozenset(request.scopes)
    if request.revoked is not None:
        key.revoked = request.revoked
    if request.inactive is not None:
        key.inactive = request.inactive
    if request.rate_limit is not None:
        key.rate_limit = request.rate_limit
    return Reply(200, info(key))


ENDPOINTS = [
    Endpoint("GET", "/_mockglot/keys", list_keys, "", "List keys", response=wire.ListOf),
    Endpoint(
        "POST", "/_mockglot/keys", update_key, "", "Create or change a key",
        request=wire.KeyUpdate, response=wire.KeyInfo, body_required=True,
    ),
]  # fmt: skip
