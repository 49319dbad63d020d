"""Everything the server remembers, in one object with one `reset()`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mockglot.faults import FaultRegistry
from mockglot.scenarios import SUFFIXES, ScenarioLibrary
from mockglot.settings import Settings
from mockglot.state.agents import AgentStore
from mockglot.state.analyses import AnalysisStore
from mockglot.state.auth import KeyStore, load_keys_file
from mockglot.state.clock import Clock
from mockglot.state.contract import ContractReports
from mockglot.state.events import EventBus
from mockglot.state.feed import Feed, lifecycle_listener
from mockglot.state.idempotency import IdempotencyStore
from mockglot.state.provider import ProviderLegs
from mockglot.state.randomness import Randomness
from mockglot.state.ratelimit import RateLimiter
from mockglot.state.recordings import RecordingStore
from mockglot.state.replica import Coordinator, LocalCoordinator, Replica
from mockglot.state.requests import RequestJournal
from mockglot.state.sessions import Retention, SessionStore
from mockglot.state.streams import LiveStreams
from mockglot.webhooks.state import WebhookStore, parse_setting

if TYPE_CHECKING:
    from mockglot.transport import ConnectionGauge


class ServerState:
    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or Clock()
        self.randomness = Randomness(settings.seed)
        self.events = EventBus()
        self.feed = Feed(self.clock.now)  # what the inspector shows; first to hear every lifecycle event
        self.events.subscribe(lifecycle_listener(self.feed))
        self.keys = KeyStore(load_keys_file(settings.keys) if settings.keys else None)
        self.rate_limiter = RateLimiter(settings.rate_limit)
        self.idempotency = IdempotencyStore()
        retention = Retention(settings.retain_sessions, settings.retain_minutes, settings.retain_mb)
        self.sessions = SessionStore(self.clock, self.randomness, self.events, retention)
        self.scenarios = ScenarioLibrary(settings.fixtures)
        if settings.scenario not in self.scenarios.names():  # an unknown default fails at start, not later
            path = Path(settings.scenario)
            if path.suffix.lower() not in SUFFIXES and not path.exists():
                raise ValueError(
                    f"unknown scenario {settings.scenario!r}: give a scenario file's path or one of "
                    f"{', '.join(self.scenarios.names())} (add folders with --fixtures)"
                )
            if path.suffix.lower() not in SUFFIXES:
                raise ValueError(f"scenario {path}: a scenario file's name ends in {', '.join(SUFFIXES)}")
            # the operator's file (loading says what is wrong with one that is missing or broken); sessions know
            # it by its name
            settings.scenario = self.scenarios.add_file(path)
        self.faults = FaultRegistry(self.randomness, self.feed)
        self.requests = RequestJournal()
        self.contract = ContractReports()
        self.webhooks = WebhookStore(self.clock, self.randomness)  # sent by the app's Dispatcher (app.py)
        for entry in settings.webhooks:
            url, secret = parse_setting(entry)
            self.webhooks.register(url, secret=secret, source="settings")
        self.agents = AgentStore(self.clock, self.randomness)
        self.provider_legs = ProviderLegs(self.events, self.sessions._changed)  # a dial shares its session
        self.recordings = RecordingStore(self.clock, self.randomness, self.events)
        self.analyses = AnalysisStore(self.clock, self.randomness, self.events)
        self.streams: LiveStreams[Any] = LiveStreams()  # pipelines and open sockets (built by engines/hub.py)
        # What follows a session's first audio and its end, in this order (the event bus only announces: the
        # feed and the webhooks listen, and nothing depends on the order they subscribed in).
        self.sessions.after_start = (self.provider_legs.session_started,)
        self.sessions.after_end = (self.provider_legs.session_ended, self.recordings.session_ended, self.streams.ended)
        self.sessions.on_evict(self.recordings.evict)
        self.sessions.on_evict(self.analyses.evict)
        self.clock.on_change(self.sweep)
        self.connections: ConnectionGauge | None = None  # open sockets and their limit, when served by uvicorn
        self.coordinator: Coordinator = LocalCoordinator()  # how requests hold the state (shared: `share()`)
        self.shared = False
        self.markers: list[str | None] = []  # resets since the last save (shared): organizations, None for all

    def replicas(self) -> list[Replica]:
        """The stores several workers share (see state/replica.py). What stays with each worker: the request
        journal, the inspector's feed, the contract report, provider legs, endpoints from the settings, and
        what a stream holds (its pipeline, frame journal and audio: read on the worker it ran on)."""
        return [
            self.clock,
            self.randomness,
            self.keys,
            self.rate_limiter,
            self.idempotency,
            self.faults,
            self.scenarios,
            self.webhooks,
            self.sessions,
            self.recordings,
            self.analyses,
            self.agents,
        ]

    def share(self, coordinator: Coordinator, worker: str, alive: Callable[[str], bool]) -> None:
        """Share the state with other workers through `coordinator` (`--state redis://`)."""
        self.coordinator = coordinator
        self.shared = True
        self.randomness.share(worker)
        for store in (self.clock, self.keys, self.rate_limiter, self.idempotency, self.faults, self.agents):
            store.share()
        self.scenarios.share()
        self.webhooks.share(worker, alive, coordinator)
        self.sessions.share(worker)
        self.sessions.alive = alive
        self.sessions.on_change = coordinator.changed
        self.faults.on_change = coordinator.changed
        self.recordings.share(worker, self.sessions.lookup, alive, coordinator.changed)
        self.analyses.share(self.sessions.lookup)

    def sweep(self) -> None:
        """Whatever the clock made due: idle sessions end, analyses finish, old idempotency keys go."""
        self.sessions.sweep()
        self.analyses.sweep()
        self.idempotency.purge(self.clock.now())

    def reset(self, organization: str | None = None) -> None:
        """Forget everything (or one organization's part): sessions and their live streams (closed with 4004),
        idempotency keys, usage, faults, journals, the contract report. One organization's reset costs what that
        organization holds, not what the server holds."""
        keys: set[str] | None = None
        if organization is None:
            self.randomness.reseed(self.randomness.seed)  # the seed as last set (POST /_mockglot/seed), on any worker
            self.rate_limiter.reset()
            self.faults.reset()
            self.requests.reset()
        else:
            keys = self.keys.of(organization)
            self.randomness.forget({*keys, f"{organization}\0live", f"{organization}\0test"})
            self.rate_limiter.reset(keys)
            self.faults.reset(keys)
            self.requests.reset(keys)
        self.streams.reset(organization)
        self.sessions.reset(organization)
        self.agents.reset(organization)
        self.recordings.reset(organization)
        self.analyses.reset(organization)
        self.idempotency.reset(organization)
        self.contract.reset(organization)
        self.keys.reset(organization)
        self.webhooks.reset(organization)
        self.scenarios.reset(keys, organization)
        self.feed.publish("reset", None, organization, None, {"organization": organization})
        if self.shared:
            self.markers.append(organization)
