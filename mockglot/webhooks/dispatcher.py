"""Delivering webhooks: turn lifecycle events into signed POSTs, in order per endpoint, retried on the clock.

Nothing on the request path awaits a delivery. An event is rendered and recorded synchronously (the data is
a snapshot of the resource at that moment), then background tasks send it: one ordered lane per endpoint for
first attempts, retries when the server clock makes them due, all under one bound on concurrent requests and a
smaller one per endpoint. A receiver that hangs or refuses holds only its own lane and its own share.

Shared between workers, each worker sends only the deliveries it owns (see `webhooks/state.py`), and claims,
every CLAIM_SECONDS, those whose owner stopped or died.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from mockglot import __version__, render, wire
from mockglot.settings import Settings
from mockglot.state.clock import Clock, isoformat
from mockglot.state.events import Event, EventBus
from mockglot.state.feed import Feed
from mockglot.webhooks.signing import SIGNATURE_HEADER, sign
from mockglot.webhooks.state import RETRY_JITTER, Attempt, Delivery, WebhookStore

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("mockglot.webhooks")

ATTEMPT_TIMEOUT_SECONDS = 30.0
MAX_CONCURRENT_ATTEMPTS = 32
MAX_ATTEMPTS_PER_ENDPOINT = 4  # of those, one endpoint's: retries of a receiver that hangs cannot take them all
DISCARD_SECONDS = 1.0  # how long a receiver's answer body may take before its connection is closed instead
MAX_DISCARDED_BYTES = 64 * 1024
USER_AGENT = f"mockglot/{__version__} (Kallglot webhooks)"
CLAIM_SECONDS = 1.0  # shared: how often a worker looks for deliveries no live worker sends
_WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


@dataclass(slots=True)
class _Lane:
    """One endpoint's first attempts, sent one after another in event order; `slots` bounds all its attempts."""

    queue: deque[Delivery] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MAX_ATTEMPTS_PER_ENDPOINT))


class Dispatcher:
    """Built and closed with the app (`app.py`'s lifespan starts and stops it); the endpoints and deliveries it
    works from are state (`ServerState.webhooks`, a `WebhookStore`), forgotten by the state's reset."""

    def __init__(
        self, settings: Settings, clock: Clock, events: EventBus, store: WebhookStore, feed: Feed | None = None
    ) -> None:
        self.settings = settings
        self.feed = feed
        self.clock = clock
        self.store = store
        self.attempt_timeout = ATTEMPT_TIMEOUT_SECONDS
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._lanes: dict[str, _Lane] = {}
        self._due: list[tuple[float, int, str]] = []  # heap of (due at, tie-break, delivery id)
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._attempts: dict[str, asyncio.Task[None]] = {}  # delivery id -> its attempt in flight
        self._claimer: asyncio.Task[None] | None = None  # shared: takes over deliveries of workers gone
        events.subscribe(self._on_event)
        clock.on_change(self._on_clock)
        store.on_drop(self._dropped)

    # --- the control plane's verbs -------------------------------------------------------------------------

    def redeliver(self, delivery_id: str) -> Delivery | None:
        """Send a delivery's event again as a new delivery (same event id and body, a fresh schedule)."""
        original = self.store.get(delivery_id)
        if original is None:
            return None
        copy = self.store.add(
            original.endpoint, original.event_id, original.event_type, original.session_id,
            original.organization, original.body, redelivery_of=original.id,
        )  # fmt: skip
        self._enqueue(copy)
        return copy

    def _dropped(self, deliveries: list[Delivery]) -> None:
        """A reset or an endpoint's removal dropped these: stop their attempts, and the lanes of endpoints gone."""
        self._cancel(deliveries)
        for endpoint_id in [e for e in self._lanes if e not in self.store.endpoints]:
            del self._lanes[endpoint_id]

    # --- lifecycle: deliveries run while the server runs ---------------------------------------------------

    def start(self) -> None:
        """Begin sending (on the server's loop): whatever was recorded before starts now."""
        self._loop = asyncio.get_running_loop()
        self._semaphore = asyncio.Semaphore(MAX_CONCURRENT_ATTEMPTS)
        for endpoint in self.store.endpoints.values():
            secret = f"; signing secret {endpoint.secret}" if endpoint.generated_secret else ""
            log.info("webhooks: delivering to %s (endpoint %s%s)", endpoint.url, endpoint.id, secret)
        for endpoint_id in list(self._lanes):
            self._kick(endpoint_id)
        self._due = [
            (d.next_attempt_at, next(self._order), d.id)
            for d in self.store.deliveries(status="pending")
            if d.next_attempt_at is not None and self.store.mine(d)
        ]
        heapq.heapify(self._due)
        self._arm()
        if self.store.worker is not None:
            self._claimer = self._loop.create_task(self._claim_forever())

    def _http(self) -> httpx.AsyncClient:
        """The sending client, made on the first delivery: httpx and a certificate store cost start-up ~0.1 s."""
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(
                timeout=self.attempt_timeout,
                trust_env=False,  # a proxy from the environment must not stand between us and a local receiver
                follow_redirects=False,
                limits=httpx.Limits(max_connections=MAX_CONCURRENT_ATTEMPTS),
                headers={"User-Agent": USER_AGENT},
            )
        return self._client

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        tasks = [*self._attempts.values(), *(lane.task for lane in self._lanes.values() if lane.task)]
        if self._claimer is not None:
            tasks.append(self._claimer)
            self._claimer = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.store.worker is not None:
            self.store.release()  # written back by the coordinator's last hold, when it stops after this
        if self._client is not None:
            await self._client.aclose()
        self._loop, self._client, self._semaphore, self._timer = None, None, None, None

    # --- events in ---------------------------------------------------------------------------------------

    @property
    def origin(self) -> str:
        """The WebSocket origin for `stream.url` in session data when the session does not say which one its
        client reached (`SessionRecord.origin`): the settings'."""
        host = _WILDCARD_HOSTS.get(self.settings.host, self.settings.host)
        return f"ws://{f'[{host}]' if ':' in host else host}:{self.settings.port}"

    def _on_event(self, event: Event) -> None:
        """Record one delivery per interested endpoint. Runs inside the API call: never raises, never waits."""
        try:
            organization = event.session.owner[0]
            endpoints = self.store.matching(event.type, organization)
            if not endpoints:
                return
            now = self.clock.now()
            event_id = self.store.new_event_id(now)
            envelope = wire.WebhookEvent(
                id=event_id, type=event.type, created_at=isoformat(now), data=self._data(event, now)
            )
            body = wire.encode(envelope)
            for endpoint in endpoints:
                self._enqueue(self.store.add(endpoint, event_id, event.type, event.session.id, organization, body))
        except Exception:
            log.exception("webhooks: could not record a %s event", event.type)

    def _data(self, event: Event, now: float) -> Any:
        """The resource as REST returns it at this moment."""
        record = event.session
        if event.type == "transcript.segment" and event.turn is not None:
            return wire.TranscriptSegment(session_id=record.id, **msgspec.structs.asdict(render.turn(event.turn)))
        if event.type == "transcript.ready":
            return render.transcript(record, now)
        if event.type.startswith("recording."):
            return render.recording(event.resource)
        if event.type.startswith("analysis."):
            return render.analysis(event.resource)
        origin = record.origin or self.origin  # where its client reached it (a port mapping, a proxy), else ours
        session = render.session(record, record.token, origin)  # the token as it is: only a GET reissues
        if event.type == "session.ended":  # (r2) plus `duration`, as the documentation's example shows
            return wire.EndedSession(**msgspec.structs.asdict(session), duration=record.duration_seconds(now))
        return session

    # --- scheduling --------------------------------------------------------------------------------------

    def _soon(self, callback: Any, *args: Any) -> None:
        """Run on the server's loop: now if we are on it, else thread-safely; not at all before start()."""
        loop = self._loop
        if loop is None:
            return
        try:
            here = asyncio.get_running_loop() is loop
        except RuntimeError:
            here = False
        if here:
            callback(*args)
        else:
            loop.call_soon_threadsafe(callback, *args)

    def _enqueue(self, delivery: Delivery) -> None:
        self._lane(delivery.endpoint.id).queue.append(delivery)
        self._soon(self._kick, delivery.endpoint.id)

    def _lane(self, endpoint_id: str) -> _Lane:
        """The endpoint's lane, made on its first delivery (`setdefault` made one, with its semaphore, every call)."""
        lane = self._lanes.get(endpoint_id)
        if lane is None:
            lane = self._lanes[endpoint_id] = _Lane()
        return lane

    def _kick(self, endpoint_id: str) -> None:
        lane = self._lanes.get(endpoint_id)
        if self._loop is None or lane is None or not lane.queue or (lane.task is not None and not lane.task.done()):
            return
        lane.task = self._loop.create_task(self._drain(lane))

    async def _drain(self, lane: _Lane) -> None:
        while lane.queue:
            delivery = lane.queue.popleft()
            if not delivery.cancelled and not delivery.attempts:
                await asyncio.wait([self._launch(delivery)])  # wait, but a cancelled attempt does not stop the lane

    def _on_clock(self) -> None:
        self._soon(self._fire_due)

    def _fire_due(self) -> None:
        """Launch every retry the clock has reached, then wait for the next."""
        now = self.clock.now()
        while self._due and self._due[0][0] <= now:
            due, _, delivery_id = heapq.heappop(self._due)
            delivery = self.store.get(delivery_id)
            if (
                delivery is not None
                and not delivery.cancelled
                and delivery.next_attempt_at == due
                and self.store.mine(delivery)
            ):
                self._launch(delivery)
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._due and self._loop is not None:
            self._timer = self._loop.call_later(max(self._due[0][0] - self.clock.now(), 0), self._fire_due)

    async def _claim_forever(self) -> None:
        while True:
            await asyncio.sleep(CLAIM_SECONDS)
            try:
                await self.claim()
            except Exception as exc:  # the shared state is away (503): the next round tries again
                log.warning("webhooks: could not claim other workers' deliveries: %s", exc)

    async def claim(self) -> None:
        """Take over the pending deliveries of workers that stopped or died, and send them as due."""
        if not self.store.orphaned():  # the common case, without the lock
            return
        async with self.store.hold_unless_busy() as held:
            claimed = self.store.claim() if held else []
        for delivery in claimed:
            if not delivery.attempts:
                self._enqueue(delivery)
            elif delivery.next_attempt_at is not None:
                heapq.heappush(self._due, (delivery.next_attempt_at, next(self._order), delivery.id))
        if claimed:
            log.info("webhooks: took over %d deliveries from workers gone", len(claimed))
            self._arm()

    def _cancel(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            task = self._attempts.get(delivery.id)
            if task is not None:
                self._soon(task.cancel)

    # --- attempts ----------------------------------------------------------------------------------------

    def _launch(self, delivery: Delivery) -> asyncio.Task[None]:
        """Record the attempt at once (so the state shows it in flight), and send it in the background."""
        assert self._loop is not None
        attempt = delivery.begin(self.clock.now())
        self.store.changed(delivery)
        task = self._loop.create_task(self._send(delivery, attempt, self._lane(delivery.endpoint.id).slots))
        self._attempts[delivery.id] = task
        task.add_done_callback(lambda done: self._forget(delivery.id, done))
        return task

    def _forget(self, delivery_id: str, task: asyncio.Task[None]) -> None:
        if self._attempts.get(delivery_id) is task:  # a retry may already have taken its place
            del self._attempts[delivery_id]

    async def _send(self, delivery: Delivery, attempt: Attempt, slots: asyncio.Semaphore) -> None:
        assert self._semaphore is not None
        client = self._http()
        import httpx  # loaded by _http()

        status: int | None = None
        error: str | None = None
        started = time.perf_counter()
        latency: float | None = None
        try:
            async with slots, self._semaphore:
                started = time.perf_counter()
                request = client.build_request(
                    "POST", delivery.endpoint.url, content=delivery.body, headers=_headers(delivery, attempt),
                    timeout=self.attempt_timeout,
                )  # fmt: skip
                async with asyncio.timeout(self.attempt_timeout):
                    response = await client.send(request, stream=True)
                status, latency = response.status_code, (time.perf_counter() - started) * 1000
                await _discard(response)  # the status decides; the body only holds the connection
            if not 200 <= status < 300:
                error = f"HTTP {status}: only a 2xx counts as delivered"
        except (TimeoutError, httpx.TimeoutException):
            error = f"no response within {self.attempt_timeout:g} s"
        except asyncio.CancelledError:
            error = "cancelled: the server stopped, or the delivery was reset or deleted"
            raise
        except Exception as exc:  # refused, reset, bad URL...: a receiver must never crash the dispatcher
            error = f"{type(exc).__name__}: {exc}".rstrip(": ")
        finally:
            jitter = (2 * self.store.randomness.random("webhook-retry") - 1) * RETRY_JITTER
            delivery.finish(attempt, status, latency or (time.perf_counter() - started) * 1000, error, jitter)
            self.store.changed(delivery)
            self._announce(delivery, attempt)
        self._landed(delivery)

    def _announce(self, delivery: Delivery, attempt: Attempt) -> None:
        if self.feed is None:
            return
        data = {
            "delivery_id": delivery.id,
            "endpoint_id": delivery.endpoint.id,
            "event_type": delivery.event_type,
            "retry_count": attempt.retry_count,
            "status_code": attempt.status_code,
            "error": attempt.error,
            "delivery_status": delivery.status,
        }
        self.feed.publish("webhook.attempt", delivery.session_id, delivery.organization, None, data)

    def _landed(self, delivery: Delivery) -> None:
        if delivery.cancelled:
            return
        if delivery.next_attempt_at is not None:
            heapq.heappush(self._due, (delivery.next_attempt_at, next(self._order), delivery.id))
            self._arm()
        else:
            self.store.finished(delivery)


async def _discard(response: httpx.Response) -> None:
    """Read and drop a small answer so its keep-alive connection is reused; a large or slow one is just closed."""
    import httpx  # loaded by the dispatcher's client

    try:
        async with asyncio.timeout(DISCARD_SECONDS):
            received = 0
            async for chunk in response.aiter_raw():
                received += len(chunk)
                if received > MAX_DISCARDED_BYTES:
                    break
    except (TimeoutError, httpx.HTTPError):
        pass
    finally:
        await response.aclose()


def _headers(delivery: Delivery, attempt: Attempt) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(delivery.body, delivery.endpoint.secret, int(attempt.at)),
        "Kallglot-Webhook-Id": delivery.id,
        "Kallglot-Retry-Count": str(attempt.retry_count),
        "Kallglot-Original-Timestamp": str(int(delivery.attempts[0].at)),
    }
