"""Saved agents: create, list (cursor pagination), retrieve (kallglot-api.md §6, "Other documented endpoints").

A saved agent is what a session's `agent_id` names in place of an inline `ai_agent`.

[emulator] The list is newest first, like Stripe's. `limit` is 1-100 (default 20); anything else is a 422
`invalid_field_value` with param `limit`. `starting_after` and `ending_before` take an agent id from a page; a
cursor that names no agent of the caller (unknown, malformed or another organization's) is a 422
`invalid_field_value` naming the parameter, not a 404: the list exists, the parameter is wrong. Giving both
cursors is a 422 on `ending_before`.
"""

from __future__ import annotations

from mockglot import render, wire
from mockglot.api import pagination
from mockglot.api.endpoint import Context, Endpoint, Reply
from mockglot.api.pagination import page_query


async def create_agent(ctx: Context) -> Reply:
    request = ctx.parse(wire.AgentCreate)
    record = ctx.state.agents.create(ctx.key.owner, request)
    return Reply(201, render.agent(record))


async def list_agents(ctx: Context) -> Reply:
    page = ctx.state.agents.page(ctx.key.owner, *page_query(ctx))
    return Reply(200, wire.AgentList(data=[render.agent(r) for r in page.items], has_more=page.has_more))


async def get_agent(ctx: Context) -> Reply:
    return Reply(200, render.agent(ctx.state.agents.get(ctx.key.owner, ctx.path("agent_id"))))


ENDPOINTS = [
    Endpoint(
        "POST", "/v1/agents", create_agent, "agents:write", "Create an agent",
        status=201, request=wire.AgentCreate, response=wire.Agent, body_required=True, idempotent=True,
    ),
    Endpoint(
        "GET", "/v1/agents", list_agents, "agents:read", "List agents", response=wire.AgentList,
        query=pagination.QUERY,
    ),
    Endpoint("GET", "/v1/agents/{agent_id}", get_agent, "agents:read", "Retrieve an agent", response=wire.Agent),
]  # fmt: skip
