"""Saved AI agents (`agt_`): what `POST /v1/agents` stores and a session's `agent_id` names.

Scoped by owner like sessions; listed newest first with Stripe-style cursors.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from mockglot.errors import ApiError
from mockglot.state.auth import Owner
from mockglot.state.clock import Clock
from mockglot.state.pagination import Page, paginate
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
        for environment in ("live", "test"):  # only this organization's agents: a reset costs O(its agents)
            for record in self._by_owner.pop((organization, environment), ()):
                self._agents.pop(record.id, None)

    def create(self, owner: Owner, request: AgentCreate) -> AgentRecord:
        now = self.clock.now()
        scope = f"{owner[0]}\0{owner[1]}"  # the owner's own sequence when seeded
        record = AgentRecord(self.randomness.new_id("agt", "agent", now, scope), owner, request, now)
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
    ) -> Page[AgentRecord]:
        """The owner's agents, newest first, one page (see `mockglot.state.pagination`)."""
        newest_first = list(reversed(self._by_owner.get(owner, [])))
        return paginate(newest_first, lambda r: r.id, limit, starting_after, ending_before, "GET /v1/agents")
