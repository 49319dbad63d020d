"""Analyses: request one for a session, then poll it (kallglot-api.md §6, "Other documented endpoints").

[emulator] A session without transcript turns cannot be analysed: 409 `transcript_empty` (the request is
fine, the session is not ready for it; nothing is charged). How an analysis runs and fails is decided in
`mockglot.state.analyses`.
"""

from __future__ import annotations

from mockglot import render, wire
from mockglot.api.endpoint import Context, Endpoint, Reply


async def create_analysis(ctx: Context) -> Reply:
    request = ctx.parse(wire.AnalysisRequest)
    session = ctx.state.sessions.get(ctx.key.owner, ctx.path("session_id"))
    ctx.state.analyses.check(session)
    ctx.state.keys.charge(ctx.key)
    record = ctx.state.analyses.create(session, request.profile, request.include)
    return Reply(202, wire.AnalysisAccepted(id=record.id, session_id=session.id))


async def get_analysis(ctx: Context) -> Reply:
    return Reply(200, render.analysis(ctx.state.analyses.get(ctx.key.owner, ctx.path("analysis_id"))))


ENDPOINTS = [
    Endpoint(
        "POST", "/v1/sessions/{session_id}/analysis", create_analysis, "analysis:write", "Analyse a session",
        status=202, request=wire.AnalysisRequest, response=wire.AnalysisAccepted, idempotent=True,
    ),
    Endpoint(
        "GET", "/v1/analyses/{analysis_id}", get_analysis, "analysis:read", "Retrieve an analysis",
        response=wire.Analysis,
    ),
]  # fmt: skip
