"""Health, reset, the clock and the seed."""

from __future__ import annotations

import os
import socket
from datetime import datetime

from mockglot import __version__, wire
from mockglot.control.endpoint import ControlContext, Endpoint, Reply
from mockglot.errors import ApiError
from mockglot.state.clock import isoformat


async def health(ctx: ControlContext) -> Reply:
    # Counts, not walks: a container's health check runs every few seconds against however many sessions.
    return Reply(
        200,
        wire.Health(
            version=__version__,
            engine=ctx.state.settings.engine,
            sessions=ctx.state.sessions.count(),
            live_streams=len(ctx.state.streams.connections),
            connections=gauge.open if (gauge := ctx.state.connections) else None,
            max_connections=gauge.limit if gauge else None,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            workers=ctx.state.settings.workers,
        ),
    )


async def reset(ctx: ControlContext) -> Reply:
    request = ctx.parse(wire.ResetRequest)
    organization = request.organization
    if request.api_key is not None and organization is not None:
        raise ApiError(
            "invalid_field_value",
            "Give `api_key` or `organization` (or neither, to reset everything), not both.",
            param="api_key",
        )
    if request.api_key is not None:
        organization = ctx.state.keys.organization_of(request.api_key)
        if organization is None:
            return Reply(200, wire.ResetResult(reset="organization", organization=None))
    ctx.state.reset(organization)
    return Reply(200, wire.ResetResult(reset="organization" if organization else "all", organization=organization))


def _clock_state(ctx: ControlContext) -> wire.ClockState:
    now = ctx.state.clock.now()
    return wire.ClockState(now=isoformat(now), unix=round(now, 3), offset_seconds=round(ctx.state.clock.offset, 3))


async def get_clock(ctx: ControlContext) -> Reply:
    return Reply(200, _clock_state(ctx))


async def set_clock(ctx: ControlContext) -> Reply:
    request = ctx.parse(wire.ClockRequest)
    clock = ctx.state.clock
    if sum((request.set is not None, request.advance is not None, request.reset)) != 1:
        raise ApiError(
            "invalid_field_value",
            "Give exactly one of `set` (ISO-8601 or unix seconds), `advance` (seconds) or `reset: true`.",
        )
    if request.reset:
        clock.reset()
        return Reply(200, _clock_state(ctx))
    param = "advance" if request.advance is not None else "set"
    try:
        if request.advance is not None:
            clock.advance(request.advance)
        elif isinstance(request.set, str):
            clock.set(_parse_time(request.set))
        else:
            clock.set(float(request.set))  # type: ignore[arg-type]
    except ValueError as exc:  # out of range: nothing changed
        raise ApiError(
            "invalid_field_value",
            f"`{param}` is out of range: {exc}. Give a time between those, or `reset: true`.",
            param=param,
        ) from None
    return Reply(200, _clock_state(ctx))


def _parse_time(text: str) -> float:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError):
        raise ApiError(
            "invalid_field_value", f"`set` {text!r} is not ISO-8601 (2026-03-10T11:55:00Z).", param="set"
        ) from None


async def get_seed(ctx: ControlContext) -> Reply:
    return Reply(200, wire.SeedState(seed=ctx.state.randomness.seed))


async def set_seed(ctx: ControlContext) -> Reply:
    request = ctx.parse(wire.SeedRequest)
    ctx.state.settings.seed = request.seed
    ctx.state.randomness.reseed(request.seed)
    return Reply(200, wire.SeedState(seed=request.seed))


ENDPOINTS = [
    Endpoint("GET", "/_mockglot/health", health, "", "Health", response=wire.Health),
    Endpoint(
        "POST", "/_mockglot/reset", reset, "", "Reset state", request=wire.ResetRequest, response=wire.ResetResult
    ),
    Endpoint("GET", "/_mockglot/clock", get_clock, "", "Read the clock", response=wire.ClockState),
    Endpoint(
        "POST", "/_mockglot/clock", set_clock, "", "Set or advance the clock",
        request=wire.ClockRequest, response=wire.ClockState, body_required=True,
    ),
    Endpoint("GET", "/_mockglot/seed", get_seed, "", "Read the seed", response=wire.SeedState),
    Endpoint(
        "POST", "/_mockglot/seed", set_seed, "", "Reseed IDs and tokens",
        request=wire.SeedRequest, response=wire.SeedState, body_required=True,
    ),
]  # fmt: skip
