"""Saved AI agents (`agt_`): what `POST /v1/agents` stores and a session's `agent_id` names.

Scoped by owner like sessions; listed newest first with Stripe-style cursors.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from mockglot.errors import ApiError
from mockglot.state.auth import Owner
from mockglot.state.clock import Clock
from mockglot.state.randomness import Randomness
from mockglot.wire import AgentCreate, AiAgentConfig

AGENT_FIELDS = tuple(f.name for f in msgspec.structs.fields(AiAgentConfig))


@dataclass(slots=True)
class AgentRecord:
    id: str
    owner: Owner
    request: AgentCreate
    created_at: float

    def config(self, overrides: AiAgentConfig | None = None) -> AiAgentConfig:
        """The agent as a session's `ai_agent`, with the fields `overrides` sets replacing the saved ones."""
        values = {name: getattr(self.request, name) for name in AGENT_FIELDS}
        if overrides is not None:
            values.update({name: v for name in AGENT_FIELDS if (v := getattr(overrides, name)) is not None})
        return AiAgentConfig(**values)


@dataclass(slots=True)
class Page:
    items: list[AgentRecord]
    has_more: bool


class AgentStore:
    def __init__(self, clock: Clock, randomness: Randomness) -> None:
        self.clock = clock
        self.randomness = randomness
        self._agents: dict[str, AgentRecord] = {}
        self._by_owner: dict[Owner, list[AgentRecord]] = {}  # oldest first

    def reset(self, organization: str | None = None) -> None:
        if organization is None:
            self._agents.clear()
            self._by_owner.clear()
            return
        self._agents = {k: v for k, v in self._agents.items() if v.owner[0] != organization}
        self._by_owner = {k: v for k, v in self._by_owner.items() if k[0] != organization}

    def create(self, owner: Owner, request: AgentCreate) -> AgentRecord:
        now = self.clock.now()
        record = AgentRecord(self.randomness.new_id("agt", "agent", now), owner, request, now)
        self._agents[record.id] = record
        self._by_owner.setdefault(owner, []).append(record)
        return record

    def find(self, owner: Owner, agent_id: str) -> AgentRecord | None:
        record = self._agents.get(agent_id)
        return record if record is not None and record.owner == owner else None

    def get(self, owner: Owner, agent_id: str) -> AgentRecord:
        record = self.find(owner, agent_id)
        if record is None:
            raise ApiError(
                "agent_not_found",
                f"No agent {agent_id!r} for this API key. Agents are visible only to keys of the organization "
                "and environment (live/test) that created them.",
                param="id",
            )
        return record

    def page(
        self, owner: Owner, limit: int, starting_after: str | None = None, ending_before: str | None = None
    ) -> Page:
        """Newest first. `starting_after`: the page of older agents after that one; `ending_before`: the page
        of newer agents just before it (in the same newest-first order). `has_more`: more lie beyond the page
        in the direction it was fetched.

        [emulator] a cursor that names no agent of this owner (unknown, malformed, or another organization's)
        is a 422 `invalid_field_value` naming the parameter: the list itself exists, so it is not a 404.
        """
        newest_first = list(reversed(self._by_owner.get(owner, [])))
        if ending_before is not None:
            end = self._index(newest_first, ending_before, "ending_before")
            start = max(end - limit, 0)
            return Page(newest_first[start:end], start > 0)
        start = 0 if starting_after is None else self._index(newest_first, starting_after, "starting_after") + 1
        return Page(newest_first[start : start + limit], len(newest_first) > start + limit)

    @staticmethod
    def _index(records: list[AgentRecord], agent_id: str, param: str) -> int:
        for index, record in enumerate(records):
            if record.id == agent_id:
                return index
        raise ApiError(
            "invalid_field_value",
            f"`{param}` must be the id of one of this key's agents (as listed by GET /v1/agents); {agent_id!r} is not.",
            param=param,
        )
