"""Saved AI agents (`agt_`): what `POST /v1/agents` stores and a session's `agent_id` names.

Scoped by owner like sessions; listed newest first with Stripe-style cursors. Shared between workers (one document
per agent), so an agent saved on one is the same agent on every other. Bounded like every store: past
`MAX_AGENTS` agents or `MAX_AGENT_BYTES` of them (all organizations), the oldest saved is forgotten (a session
made from it keeps its copy of the agent).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import msgspec

from mockglot.errors import ApiError
from mockglot.state.auth import Environment, Owner
from mockglot.state.clock import Clock
from mockglot.state.pagination import Page, paginate
from mockglot.state.randomness import Randomness
from mockglot.state.replica import DocTracker, SharedDocs
from mockglot.wire import AgentCreate, AiAgentConfig

MAX_AGENTS = 10_000
MAX_AGENT_BYTES = 64 * 1024 * 1024  # of their msgpack encodings (a body may be up to 1 MiB of tools)

AGENT_FIELDS = tuple(f.name for f in msgspec.structs.fields(AiAgentConfig))


@dataclass(slots=True)
class AgentRecord:
    id: str
    owner: Owner
    request: AgentCreate
    created_at: float
    size: int = 0  # bytes counted against MAX_AGENT_BYTES

    def config(self, overrides: AiAgentConfig | None = None) -> AiAgentConfig:
        """The agent as a session's `ai_agent`, with the fields `overrides` sets replacing the saved ones."""
        values = {name: getattr(self.request, name) for name in AGENT_FIELDS}
        if overrides is not None:
            values.update({name: v for name in AGENT_FIELDS if (v := getattr(overrides, name)) is not None})
        return AiAgentConfig(**values)


class AgentStore(SharedDocs):
    def __init__(self, clock: Clock, randomness: Randomness) -> None:
        self.clock = clock
        self.randomness = randomness
        self._agents: dict[str, AgentRecord] = {}
        self._by_owner: dict[Owner, list[AgentRecord]] = {}  # oldest first
        self._bytes = 0  # the sizes of the agents held
        self.tracker: DocTracker | None = None  # shared between workers (`share()`)

    # --- shared between workers (see state/replica.py): a document per agent -------------------------------

    name = "agents"

    def share(self) -> None:
        self.tracker = DocTracker(self._encode)

    def _encode(self, agent_id: str) -> bytes | None:
        record = self._agents.get(agent_id)
        if record is None:
            return None
        organization, environment = record.owner
        return _ENCODER.encode(_AgentDoc(organization, environment, record.request, record.created_at))

    def load(self, doc: str, data: bytes | None) -> None:
        if self.tracker is not None:
            self.tracker.loaded(doc, data)
        self._forget(doc)
        if data is None:
            return
        loaded = _DECODER.decode(data)
        owner: Owner = (loaded.organization, loaded.environment)
        record = AgentRecord(doc, owner, loaded.request, loaded.created_at, _size(loaded.request))
        self._agents[doc] = record
        self._bytes += record.size
        # in the order they were made, whatever the order other workers' documents arrive in
        bisect.insort(self._by_owner.setdefault(record.owner, []), record, key=lambda r: (r.created_at, r.id))

    def reset(self, organization: str | None = None) -> None:
        if organization is None:
            if self.tracker is not None:
                self.tracker.touched.update(self.tracker.known())
                self.tracker.touched.update(self._agents)
            self._agents.clear()
            self._by_owner.clear()
            self._bytes = 0
            return
        for environment in ("live", "test"):  # only this organization's agents: a reset costs O(its agents)
            for record in self._by_owner.pop((organization, environment), ()):
                if self._agents.pop(record.id, None) is not None:
                    self._bytes -= record.size
                if self.tracker is not None:
                    self.tracker.touch(record.id)

    def create(self, owner: Owner, request: AgentCreate) -> AgentRecord:
        now = self.clock.now()
        scope = f"{owner[0]}\0{owner[1]}"  # the owner's own sequence when seeded
        size = _size(request)
        record = AgentRecord(self.randomness.new_id("agt", "agent", now, scope), owner, request, now, size)
        self._agents[record.id] = record
        self._by_owner.setdefault(owner, []).append(record)
        self._bytes += size
        if self.tracker is not None:
            self.tracker.touch(record.id)
        while len(self._agents) > MAX_AGENTS or self._bytes > MAX_AGENT_BYTES:
            oldest = next(iter(self._agents))  # (insertion order: the oldest saved, or loaded, here)
            self._forget(oldest)
            if self.tracker is not None:
                self.tracker.touch(oldest)
        return record

    def _forget(self, agent_id: str) -> None:
        record = self._agents.pop(agent_id, None)
        if record is not None:
            owned = self._by_owner[record.owner]
            owned.remove(record)
            if not owned:
                del self._by_owner[record.owner]
            self._bytes -= record.size

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


class _AgentDoc(msgspec.Struct, array_like=True):
    """An agent as workers share it (its id is the document's)."""

    organization: str
    environment: Environment
    request: AgentCreate
    created_at: float


def _size(request: AgentCreate) -> int:
    """What an agent counts against `MAX_AGENT_BYTES`: the same on every worker, however it got there."""
    return len(_ENCODER.encode(request))


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(_AgentDoc)
