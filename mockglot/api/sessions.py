"""Sessions: create, retrieve, end, transcript (kallglot-api.md §6)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from mockglot import render, wire
from mockglot.api.endpoint import Context, Endpoint, Reply
from mockglot.api.transcript_formats import MEDIA_TYPES, RENDERERS
from mockglot.errors import ApiError
from mockglot.state.agents import AgentStore
from mockglot.state.auth import Owner

if TYPE_CHECKING:
    from mockglot.engines.hub import StreamHub

ENGINES = ("scripted", "vosk")
PROVIDERS: dict[str, wire.Provider] = {
    "phone_number": "twilio",
    "connection_id": "telnyx",
    "sip": "sip",
}  # [emulator] routing -> provider


def resolve_provider(routing: wire.Routing | None) -> wire.Provider | None:
    """Exactly one destination: a phone number, a connection, or SIP."""
    if routing is None:
        return None
    chosen = [
        name
        for name, present in (
            ("phone_number", routing.phone_number is not None),
            ("connection_id", routing.connection_id is not None),
            ("sip", routing.type == "sip"),
        )
        if present
    ]
    if routing.sip is not None and routing.type != "sip":
        raise ApiError(
            "invalid_routing",
            '`routing.sip` is only allowed with `routing.type: "sip"`: add `"type": "sip"` for a SIP '
            "destination, or remove `sip`.",
            param="routing.sip",
        )
    if len(chosen) != 1:
        found = f"got {', '.join(chosen)}" if chosen else "got none"
        raise ApiError(
            "invalid_routing",
            f'`routing` needs exactly one of `phone_number`, `connection_id` or `type: "sip"` ({found}).',
            param="routing",
        )
    return PROVIDERS[chosen[0]]


def validate_agent(request: wire.SessionCreate, agents: AgentStore, owner: Owner) -> wire.SessionCreate:
    """The request with its agent resolved: a saved agent (plus `overrides`) becomes the session's `ai_agent`."""
    if request.agent_id is not None:
        agent = agents.find(owner, request.agent_id)
        if agent is None:
            raise ApiError(
                "ai_agent_not_found",
                f"No saved agent {request.agent_id!r} for this API key. Create one with POST /v1/agents, or "
                "describe the agent inline with `ai_agent`.",
                param="agent_id",
            )
        if request.ai_agent is not None:
            raise ApiError(
                "invalid_field_value",
                "Give either `ai_agent` (an inline agent) or `agent_id` (a saved one, changed per session with "
                "`overrides`), not both.",
                param="ai_agent",
            )
        return msgspec.structs.replace(request, ai_agent=agent.config(request.overrides))
    if request.mode == "ai_agent" and request.ai_agent is None:
        raise ApiError(
            "missing_required_field",
            "`ai_agent` is required in ai_agent mode (unless `agent_id` names a saved agent): give at least "
            '{"system_prompt": "..."}.',
            param="ai_agent",
        )
    if request.overrides is not None and request.agent_id is None:
        raise ApiError(
            "invalid_field_value",
            "`overrides` changes a saved agent; it needs `agent_id`.",
            param="overrides",
        )
    return request


def require_vosk_model(ctx: Context, language: str | None) -> None:
    """A session that asks for Vosk on a server that cannot decode with it (no model at all, or no vosk package)
    would get no recognition, only a stream error at its first audio: it is refused now, saying how to fix it."""
    hub: StreamHub = ctx.request.app.state.hub
    missing = hub.vosk().models.missing(language)
    if missing is not None:
        raise ApiError(
            "invalid_field_value",
            f'`metadata.mockglot_engine` is "vosk", but {missing}; or leave out mockglot_engine to use the '
            "scripted engine.",
            param="metadata.mockglot_engine",
        )


async def create_session(ctx: Context) -> Reply:
    if isinstance(ctx.body, dict) and "provider" in ctx.body:
        raise ApiError(
            "invalid_field_value",
            "`provider` is not a request field: describe the destination with `routing` "
            '(`phone_number`, `connection_id` or `type: "sip"`) and the provider is resolved from it.',
            param="provider",
        )
    request = ctx.parse(wire.SessionCreate)
    provider = resolve_provider(request.routing)
    request = validate_agent(request, ctx.state.agents, ctx.key.owner)
    metadata = request.metadata or {}
    scenario = ctx.state.scenarios.choose(ctx.key.key, metadata, ctx.state.settings.scenario, ctx.key.organization)
    engine = metadata.get("mockglot_engine", ctx.state.settings.engine)
    if engine not in ENGINES:
        raise ApiError(
            "invalid_field_value",
            f"Unknown engine {engine!r} in metadata.mockglot_engine: use {' or '.join(ENGINES)}.",
            param="metadata.mockglot_engine",
        )
    if engine == "vosk" and "mockglot_engine" in metadata:
        require_vosk_model(ctx, request.source_language or request.target_language)
    ctx.state.keys.charge(ctx.key)
    origin = ctx.origin("ws")
    record = ctx.state.sessions.create(ctx.key.owner, ctx.key.key, request, provider, scenario, engine, origin)
    return Reply(201, render.session(record, record.token, origin))


async def get_session(ctx: Context) -> Reply:
    record = ctx.state.sessions.get(ctx.key.owner, ctx.path("session_id"))
    token = ctx.state.sessions.current_token(record) if record.status != "ended" else None  # reissued once expired
    return Reply(200, render.session(record, token, ctx.origin("ws")))


async def end_session(ctx: Context) -> Reply:
    ctx.parse(wire.SessionEndRequest)
    record = ctx.state.sessions.get(ctx.key.owner, ctx.path("session_id"))
    ctx.state.sessions.end(record, "api_end")
    return Reply(200, render.summary(record, ctx.state.clock.now()))


async def get_transcript(ctx: Context) -> Reply:
    record = ctx.state.sessions.get(ctx.key.owner, ctx.path("session_id"))
    fmt = ctx.query("format", "json")
    if fmt == "json":
        return Reply(200, render.transcript(record, ctx.state.clock.now()))
    if fmt not in RENDERERS:
        raise ApiError(
            "invalid_field_value",
            f"Unknown transcript format {fmt!r}: use json (the default), text, srt or vtt.",
            param="format",
        )
    return Reply(200, RENDERERS[fmt](record.turns).encode(), media_type=MEDIA_TYPES[fmt])


ENDPOINTS = [
    Endpoint(
        "POST", "/v1/sessions", create_session, "sessions:write", "Create a session",
        status=201, request=wire.SessionCreate, response=wire.Session, body_required=True, idempotent=True,
    ),
    Endpoint(
        "GET", "/v1/sessions/{session_id}", get_session, "sessions:read", "Retrieve a session",
        response=wire.Session,
    ),
    Endpoint(
        "POST", "/v1/sessions/{session_id}/end", end_session, "sessions:write", "End a session",
        request=wire.SessionEndRequest, response=wire.SessionSummary, idempotent=True,
    ),
    Endpoint(
        "GET", "/v1/sessions/{session_id}/transcript", get_transcript, "sessions:read",
        "Retrieve a session's transcript", response=wire.Transcript, query={"format": str},
        media_types=tuple(MEDIA_TYPES.values()),
    ),
]  # fmt: skip
