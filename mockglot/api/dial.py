"""`POST /v1/sessions/{id}/dial`: place the session's outbound leg (kallglot-api.md §6, "Other documented
endpoints"; idempotent per §4).

[emulator] The session must not have ended (409 `session_ended`) and must have `routing` (422
`invalid_routing`, param `routing`): the call goes to its phone number, connection or SIP destination. The
answer is 202 with a small dial object (`status: "dialing"`); the leg connects at once, which publishes
`session.provider.connected` (and `session.provider.disconnected` when the session ends). Dialing a session
whose leg is already connected answers the same and announces nothing new.
"""

from __future__ import annotations

from mockglot import wire
from mockglot.api.endpoint import Context, Endpoint, Reply
from mockglot.errors import ApiError


async def dial(ctx: Context) -> Reply:
    ctx.parse(wire.DialRequest)
    session = ctx.state.sessions.get(ctx.key.owner, ctx.path("session_id"))
    if session.status == "ended":
        raise ApiError("session_ended", f"Session {session.id} has ended: there is no call left to dial.")
    routing = session.request.routing
    if routing is None or session.provider is None:
        raise ApiError(
            "invalid_routing",
            "This session has no `routing`, so there is nowhere to dial. Create the session with `routing` "
            '(`phone_number`, `connection_id` or `type: "sip"`) to place an outbound call.',
            param="routing",
        )
    ctx.state.provider_legs.connect(session)
    to = routing.phone_number or routing.connection_id
    return Reply(202, wire.Dial(session_id=session.id, provider=session.provider, to=to))


ENDPOINTS = [
    Endpoint(
        "POST", "/v1/sessions/{session_id}/dial", dial, "sessions:write", "Dial a session's outbound leg",
        status=202, request=wire.DialRequest, response=wire.Dial, idempotent=True,
    ),
]  # fmt: skip
