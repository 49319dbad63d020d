"""Webhook endpoints and deliveries: what is registered, what was sent, what is due. No I/O here.

A delivery is one event for one endpoint, with every attempt made. The retry schedule is part of the state,
on the server clock, so a test that advances the clock makes retries due. (r2) The documented delays are
between attempts: each retry is due its delay after the attempt before it, give or take RETRY_JITTER of it.

Shared between workers (`WebhookStore.share()`), the endpoints the control plane registered and the deliveries
are documents. A delivery is sent only by the worker that owns it (`Delivery.owner`): the worker whose event
made it (each event happens on one worker, so it is delivered once), or, once that worker stopped or died, the
one that claimed it under the lock (the dispatcher's claimer), so retries survive a worker. Endpoints from the
settings stay each worker's own (every worker registers them from the same settings: sharing them would deliver
each event once per worker); their generated secret is derived from a key the workers share (`settings-key`),
so a receiver verifies every worker's deliveries with one secret.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import math
import re
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from mockglot.errors import ApiError
from mockglot.state.clock import Clock
from mockglot.state.randomness import Randomness
from mockglot.state.replica import Coordinator, DocTracker, SharedDocs
from mockglot.wire import WEBHOOK_EVENTS, WebhookStatus

RETRY_DELAYS_SECONDS = (60, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 24 * 3600)  # each after the one before
RETRY_JITTER = 0.1  # [emulator] each delay is stretched or shortened by up to 10%, from the seeded randomness
MAX_ATTEMPTS = 1 + len(RETRY_DELAYS_SECONDS)
MAX_FINISHED_DELIVERIES = 10_000  # the oldest finished deliveries are forgotten beyond this; pending never are
SECRET_BYTES = 24
KEY_DOC = "settings-key"  # shared: the key the settings endpoints' generated secrets are derived from

Source = Literal["settings", "control"]


@dataclass(slots=True, eq=False)
class WebhookEndpoint:
    id: str
    url: str
    events: frozenset[str] | None  # None: every event
    secret: str
    organization: str | None  # None: every organization's events
    source: Source
    created_at: float
    generated_secret: bool = False
    order: int = 0  # when it was registered: endpoints are listed and sent to in this order

    def wants(self, event_type: str, organization: str) -> bool:
        return (self.events is None or event_type in self.events) and self.organization in (None, organization)


@dataclass(slots=True)
class Attempt:
    retry_count: int
    at: float  # server clock; also the signature's `t`
    status_code: int | None = None
    latency_ms: float | None = None  # None while the attempt is in flight
    error: str | None = None


@dataclass(slots=True, eq=False)
class Delivery:
    id: str
    endpoint: WebhookEndpoint
    event_id: str
    event_type: str
    session_id: str
    organization: str
    body: bytes  # the envelope, encoded once: every attempt sends the same bytes
    created_at: float
    redelivery_of: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    status: WebhookStatus = "pending"
    next_attempt_at: float | None = None
    cancelled: bool = False  # its endpoint was deleted or the state reset: never attempt it again
    owner: str = ""  # shared: the worker that sends it ("" alone, or released by a worker that stopped)

    @property
    def in_flight(self) -> bool:
        return bool(self.attempts) and self.attempts[-1].latency_ms is None

    def begin(self, now: float) -> Attempt:
        attempt = Attempt(retry_count=len(self.attempts), at=now)
        self.attempts.append(attempt)
        self.next_attempt_at = None
        return attempt

    def finish(
        self, attempt: Attempt, status_code: int | None, latency_ms: float, error: str | None, jitter: float = 0.0
    ) -> None:
        """Record an outcome: success ends the delivery, the 8th failure fails it, others schedule a retry,
        due its delay (times 1 + `jitter`, a fraction within ±RETRY_JITTER) after this attempt."""
        attempt.status_code, attempt.latency_ms, attempt.error = status_code, round(latency_ms, 1), error
        if error is None:
            self.status = "succeeded"
        elif len(self.attempts) >= MAX_ATTEMPTS:
            self.status = "failed"
        else:
            delay = RETRY_DELAYS_SECONDS[len(self.attempts) - 1]
            due = attempt.at + delay * (1 + max(-RETRY_JITTER, min(jitter, RETRY_JITTER)))
            self.next_attempt_at = float(math.ceil(due))  # a whole second, so the time shown is the time due


_HOST = re.compile(rb"[A-Za-z0-9._:-]+")  # a name (IDNA already encoded), an IPv4 or an IPv6 address


def url_problem(url: str) -> str | None:
    """Why `url` cannot receive webhooks, or None. Parsed as the sender will parse it."""
    import httpx  # here, not at import: serving starts without httpx

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return "is not a valid URL"
    if parsed.scheme not in ("http", "https"):
        return "must be an absolute http:// or https:// URL"
    if not parsed.host:
        return "has no host"
    if not _HOST.fullmatch(parsed.raw_host):
        return f"has an invalid host {parsed.host!r}"
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        return f"has port {parsed.port}, outside 1-65535"
    return None


def parse_setting(entry: str) -> tuple[str, str | None]:
    """`URL` or `URL#SECRET` (the --webhook flag, MOCKGLOT_WEBHOOKS): a fragment never reaches a receiver."""
    url, _, secret = entry.strip().partition("#")
    problem = url_problem(url)
    if problem is not None:
        raise ValueError(f"invalid webhook {url!r}: the URL {problem} (give URL or URL#SECRET)")
    return url, secret or None


class WebhookStore(SharedDocs):
    def __init__(self, clock: Clock, randomness: Randomness) -> None:
        self.clock = clock
        self.randomness = randomness
        self.endpoints: dict[str, WebhookEndpoint] = {}  # in the order they were registered
        self._registered = 0  # the last endpoint's order
        self._deliveries: dict[str, Delivery] = {}
        self._by_org: dict[str, dict[str, Delivery]] = {}  # so one organization's reset costs only its own
        self._finished: deque[str] = deque()
        self._drop_listeners: list[Callable[[list[Delivery]], None]] = []
        self.tracker: DocTracker | None = None  # shared between workers: control endpoints, deliveries, the key
        self.worker: str | None = None  # shared: this worker's name (it sends the deliveries it owns)
        self.alive: Callable[[str], bool] = lambda worker: True
        self.coordinator: Coordinator | None = None
        self._settings_key: bytes | None = None

    # --- shared between workers (see state/replica.py) ---------------------------------------------------

    name = "webhooks"

    def share(
        self, worker: str = "", alive: Callable[[str], bool] | None = None, coordinator: Coordinator | None = None
    ) -> None:
        self.tracker = DocTracker(self._encode)
        self.worker, self.coordinator = worker, coordinator
        if alive is not None:
            self.alive = alive
        if self.randomness.seed is None:  # seeded, every worker already draws the same secrets
            self._settings_key = secrets.token_bytes(32)  # the first worker's becomes everyone's
            self.tracker.touch(KEY_DOC)
            self._derive_secrets()

    def _derive_secrets(self) -> None:
        assert self._settings_key is not None
        for endpoint in self.endpoints.values():
            if endpoint.source == "settings" and endpoint.generated_secret:
                digest = hmac.new(self._settings_key, endpoint.url.encode(), hashlib.sha256).hexdigest()
                endpoint.secret = "whsec_" + digest[: 2 * SECRET_BYTES]

    def _encode(self, endpoint_id: str) -> bytes | None:
        if endpoint_id.startswith("wh_del_"):
            delivery = self._deliveries.get(endpoint_id)
            return None if delivery is None else _ENCODER.encode(_delivery_doc(delivery))
        if endpoint_id == KEY_DOC:
            return self._settings_key
        endpoint = self.endpoints.get(endpoint_id)
        if endpoint is None or endpoint.source != "control":
            return None
        events = None if endpoint.events is None else sorted(endpoint.events)
        return _ENCODER.encode(
            _EndpointDoc(
                endpoint.url,
                events,
                endpoint.secret,
                endpoint.organization,
                endpoint.created_at,
                endpoint.generated_secret,
                endpoint.order,
            )
        )

    def load(self, endpoint_id: str, data: bytes | None) -> None:
        """Another worker's version of an endpoint; one deleted there takes this worker's deliveries to it too."""
        if self.tracker is not None:
            self.tracker.loaded(endpoint_id, data)
        if endpoint_id.startswith("wh_del_"):
            self._load_delivery(endpoint_id, data)
            return
        if endpoint_id == KEY_DOC:
            if data is not None:
                self._settings_key = data
                self._derive_secrets()
            return
        endpoint = self.endpoints.get(endpoint_id)
        if data is None:
            if endpoint is not None and endpoint.source == "control":
                del self.endpoints[endpoint_id]
                self._dropped(self._drop(lambda d: d.endpoint.id == endpoint_id))
            return
        doc = _DECODER.decode(data)
        events = None if doc.events is None else frozenset(doc.events)
        if endpoint is None:
            self.endpoints[endpoint_id] = WebhookEndpoint(
                endpoint_id, doc.url, events, doc.secret, doc.organization, "control", doc.created_at,
                doc.generated_secret, doc.order,
            )  # fmt: skip
            if doc.order < self._registered:  # documents load in any order: keep the order of registration
                self.endpoints = dict(sorted(self.endpoints.items(), key=lambda item: item[1].order))
            self._registered = max(self._registered, doc.order)
        else:  # in place: this worker's deliveries hold it
            endpoint.url, endpoint.events, endpoint.secret = doc.url, events, doc.secret
            endpoint.organization, endpoint.created_at = doc.organization, doc.created_at
            endpoint.generated_secret = doc.generated_secret

    def _load_delivery(self, delivery_id: str, data: bytes | None) -> None:
        local = self._deliveries.get(delivery_id)
        if data is None:
            if local is not None:
                local.cancelled = True
                del self._deliveries[delivery_id]
                self._unindex(local)
                self._dropped([local])
            return
        doc = _DELIVERY_DECODER.decode(data)
        if local is not None and local.owner == doc.owner == self.worker:
            assert self.tracker is not None
            self.tracker.touch(delivery_id)  # this worker sends it: its own copy is the newest
            return
        endpoint = self.endpoints.get(doc.endpoint)
        if endpoint is None:  # another worker's settings endpoint, or one removed since: what sending needs
            endpoint = WebhookEndpoint(
                doc.endpoint, doc.url, None, doc.secret, doc.organization, "settings", doc.created_at
            )
        attempts = [Attempt(*fields) for fields in doc.attempts]
        status = doc.status
        if local is None:
            local = Delivery(
                delivery_id, endpoint, doc.event_id, doc.event_type, doc.session_id, doc.organization, doc.body,
                doc.created_at, doc.redelivery_of, attempts, status, doc.next_attempt_at, owner=doc.owner,
            )  # fmt: skip
            self._deliveries[delivery_id] = local
            self._by_org.setdefault(doc.organization, {})[delivery_id] = local
        else:
            local.attempts, local.status, local.owner = attempts, status, doc.owner
            local.next_attempt_at = doc.next_attempt_at
        if status != "pending":
            self._finished.append(delivery_id)
            self._forget_finished()

    # --- sending: which worker (shared) -------------------------------------------------------------------

    def mine(self, delivery: Delivery) -> bool:
        """Whether this worker sends `delivery` (alone: always)."""
        return self.worker is None or delivery.owner == self.worker

    def changed(self, delivery: Delivery) -> None:
        """A delivery's state changed (an attempt began or ended): share it soon, unless another worker took it
        over meanwhile (this worker was taken for dead): its version is the one that counts."""
        if self.tracker is not None and delivery.owner == self.worker:
            self._share(delivery)

    def _share(self, delivery: Delivery) -> None:
        assert self.tracker is not None
        self.tracker.touch(delivery.id)
        if self.coordinator is not None:
            self.coordinator.changed()

        if self.coordinator is not None:
            self.coordinator.changed()

    def orphaned(self) -> list[Delivery]:
        """Pending deliveries no live worker sends: their owner stopped (released them) or died."""
        if self.worker is None:
            return []
        worker, alive = self.worker, self.alive
        return [
            d
            for d in self._deliveries.values()
            if d.status == "pending" and not d.cancelled and d.owner != worker and (not d.owner or not alive(d.owner))
        ]

    def claim(self) -> list[Delivery]:
        """Take the orphaned deliveries (under the lock, so one worker takes each): an attempt their owner left
        in flight counts as failed. Returns those still to attempt."""
        claimed = []
        for delivery in self.orphaned():
            delivery.owner = self.worker or ""
            if delivery.in_flight:
                attempt = delivery.attempts[-1]
                delivery.finish(attempt, None, 0.0, "the worker sending it stopped before an answer")
            self.changed(delivery)
            if delivery.status == "pending":
                claimed.append(delivery)
            else:
                self.finished(delivery)
        return claimed

    def release(self) -> None:
        """This worker stops: any other may claim its pending deliveries (a killed one's are claimed too)."""
        for delivery in self._deliveries.values():
            if delivery.status == "pending" and delivery.owner == self.worker and not delivery.cancelled:
                delivery.owner = ""
                self._share(delivery)

    def hold_unless_busy(self) -> contextlib.AbstractAsyncContextManager[bool]:
        """The shared state for a claim, unless another worker holds it (and so claims)."""
        assert self.coordinator is not None
        return self.coordinator.hold_unless_busy()

    def on_drop(self, listener: Callable[[list[Delivery]], None]) -> None:
        """Called with the deliveries a reset or an endpoint's removal dropped (the dispatcher stops sending)."""
        self._drop_listeners.append(listener)

    def _dropped(self, deliveries: list[Delivery]) -> list[Delivery]:
        for listener in self._drop_listeners:
            listener(deliveries)
        return deliveries

    # --- endpoints ---------------------------------------------------------------------------------------

    def register(
        self,
        url: str,
        events: list[str] | None = None,
        secret: str | None = None,
        organization: str | None = None,
        source: Source = "control",
    ) -> WebhookEndpoint:
        """Validate and add an endpoint; without `secret`, one is generated from the one randomness source."""
        problem = url_problem(url)
        if problem is not None:
            raise ApiError(
                "invalid_field_value", f"`url` {problem}: give e.g. http://127.0.0.1:9000/hooks.", param="url"
            )
        chosen = _check_events(events)
        # Settings endpoints draw from their own streams: a reset reseeds the others, and must not repeat them.
        suffix = ":settings" if source == "settings" else ""
        now = self.clock.now()
        self._registered += 1
        endpoint = WebhookEndpoint(
            id=self.randomness.new_id("wh_ep", "webhook_endpoint" + suffix, now),
            url=url,
            events=chosen,
            secret=secret or "whsec_" + self.randomness.hex("webhook_secret" + suffix, SECRET_BYTES),
            organization=organization,
            source=source,
            created_at=now,
            generated_secret=not secret,
            order=self._registered,
        )
        self.endpoints[endpoint.id] = endpoint
        if self.tracker is not None:
            self.tracker.touch(endpoint.id)
        return endpoint

    def remove(self, endpoint_id: str) -> list[Delivery] | None:
        """Delete an endpoint and its deliveries (returned, cancelled); None if there is no such endpoint."""
        if self.tracker is not None:
            self.tracker.touch(endpoint_id)
        if self.endpoints.pop(endpoint_id, None) is None:
            return None
        return self._dropped(self._drop(lambda d: d.endpoint.id == endpoint_id))

    def matching(self, event_type: str, organization: str) -> list[WebhookEndpoint]:
        if not self.endpoints:  # the common case, on every session event: nothing to match
            return []
        return [e for e in self.endpoints.values() if e.wants(event_type, organization)]

    # --- deliveries --------------------------------------------------------------------------------------

    def new_event_id(self, now: float) -> str:
        return self.randomness.new_id("evt", "webhook_event", now)

    def add(
        self,
        endpoint: WebhookEndpoint,
        event_id: str,
        event_type: str,
        session_id: str,
        organization: str,
        body: bytes,
        redelivery_of: str | None = None,
    ) -> Delivery:
        now = self.clock.now()
        delivery = Delivery(
            id=self.randomness.new_id("wh_del", "webhook_delivery", now),
            endpoint=endpoint,
            event_id=event_id,
            event_type=event_type,
            session_id=session_id,
            organization=organization,
            body=body,
            created_at=now,
            redelivery_of=redelivery_of,
        )
        self._deliveries[delivery.id] = delivery
        self._by_org.setdefault(organization, {})[delivery.id] = delivery
        if self.tracker is not None:
            delivery.owner = self.worker or ""
            self._share(delivery)
        return delivery

    def finished(self, delivery: Delivery) -> None:
        """Note a delivery that will not be attempted again, and forget the oldest such beyond the limit."""
        if delivery.status == "pending":
            return
        self._finished.append(delivery.id)
        self._forget_finished()

    def _forget_finished(self) -> None:
        while len(self._deliveries) > MAX_FINISHED_DELIVERIES and self._finished:
            forgotten = self._deliveries.pop(self._finished.popleft(), None)
            if forgotten is not None:
                self._unindex(forgotten)
                if self.tracker is not None:
                    self.tracker.touch(forgotten.id)

    def get(self, delivery_id: str) -> Delivery | None:
        return self._deliveries.get(delivery_id)

    def deliveries(
        self,
        endpoint_id: str | None = None,
        event_type: str | None = None,
        status: str | None = None,
        session_id: str | None = None,
    ) -> list[Delivery]:
        """Oldest first, filtered by whichever of the arguments are given."""
        found = [
            d
            for d in self._deliveries.values()
            if (endpoint_id is None or d.endpoint.id == endpoint_id)
            and (event_type is None or d.event_type == event_type)
            and (status is None or d.status == status)
            and (session_id is None or d.session_id == session_id)
        ]
        if self.tracker is not None:  # loaded from other workers in any order
            found.sort(key=lambda d: (d.created_at, d.id))
        return found

    # --- reset -------------------------------------------------------------------------------------------

    def reset(self, organization: str | None = None) -> list[Delivery]:
        """Forget deliveries and the control plane's endpoints (all, or one organization's); endpoints from
        the settings stay, with their secrets. Returns the dropped deliveries, cancelled."""
        if organization is None:
            if self.tracker is not None:  # those removed are reported gone
                self.tracker.touched.update(self.endpoints)
                self.tracker.touched.update(self.tracker.known())
                if self._settings_key is not None:  # Redis drops every document: write the key again
                    self.tracker.loaded(KEY_DOC, None)
                    self.tracker.touch(KEY_DOC)
            self.endpoints = {k: e for k, e in self.endpoints.items() if e.source == "settings"}
            self._finished.clear()
            return self._dropped(self._drop(lambda d: True))
        # An organization's endpoints only receive its own events, so its deliveries are all that goes.
        if self.tracker is not None:
            self.tracker.touched.update(k for k, e in self.endpoints.items() if e.organization == organization)
        self.endpoints = {k: e for k, e in self.endpoints.items() if e.organization != organization}
        dropped = list(self._by_org.pop(organization, {}).values())
        for delivery in dropped:
            delivery.cancelled = True
            self._deliveries.pop(delivery.id, None)
            if self.tracker is not None:
                self.tracker.touch(delivery.id)
        return self._dropped(dropped)

    def _drop(self, doomed: Callable[[Delivery], bool]) -> list[Delivery]:
        dropped = [d for d in self._deliveries.values() if doomed(d)]
        for delivery in dropped:
            delivery.cancelled = True
            del self._deliveries[delivery.id]
            self._unindex(delivery)
            if self.tracker is not None:
                self.tracker.touch(delivery.id)
        return dropped

    def _unindex(self, delivery: Delivery) -> None:
        by_org = self._by_org.get(delivery.organization)
        if by_org is not None:
            by_org.pop(delivery.id, None)
            if not by_org:
                del self._by_org[delivery.organization]


class _EndpointDoc(msgspec.Struct, array_like=True):
    """An endpoint registered through the control plane, as workers share it."""

    url: str
    events: list[str] | None
    secret: str
    organization: str | None
    created_at: float
    generated_secret: bool
    order: int


class _DeliveryDoc(msgspec.Struct, array_like=True):
    """A delivery as workers share it: with its endpoint's URL and secret, which are all sending needs."""

    owner: str
    endpoint: str
    url: str
    secret: str
    event_id: str
    event_type: str
    session_id: str
    organization: str
    body: bytes
    created_at: float
    redelivery_of: str | None
    attempts: list[tuple[int, float, int | None, float | None, str | None]]
    status: WebhookStatus
    next_attempt_at: float | None


def _delivery_doc(d: Delivery) -> _DeliveryDoc:
    return _DeliveryDoc(
        d.owner, d.endpoint.id, d.endpoint.url, d.endpoint.secret, d.event_id, d.event_type, d.session_id,
        d.organization, d.body, d.created_at, d.redelivery_of,
        [(a.retry_count, a.at, a.status_code, a.latency_ms, a.error) for a in d.attempts], d.status,
        d.next_attempt_at,
    )  # fmt: skip


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(_EndpointDoc)
_DELIVERY_DECODER = msgspec.msgpack.Decoder(_DeliveryDoc)


def _check_events(events: list[str] | None) -> frozenset[str] | None:
    if events is None:
        return None
    known = ", ".join(WEBHOOK_EVENTS)
    if not events:
        raise ApiError(
            "invalid_field_value", f"`events` is empty: omit it for every event, or list some of: {known}.",
            param="events",
        )  # fmt: skip
    for index, name in enumerate(events):
        if name not in WEBHOOK_EVENTS:
            raise ApiError(
                "invalid_field_value", f"Unknown event {name!r}; the events are: {known}.", param=f"events[{index}]"
            )
    return frozenset(events)
