"""Webhooks with several workers sharing one real Redis: each event is delivered once whichever worker it happened
on, the deliveries are the same on every worker, and a retry outlives the worker that owned it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from mockglot.testing.client import Client, utterance
from mockglot.testing.server import ServerThread
from mockglot.testing.webhooks import WebhookReceiver
from tests.containers import wait_healthy
from tests.ports import free_port
from tests.shared_workers import on, workers

KEY = "sk_test_sharedhooks01"
BODY = {"mode": "bidirectional_translation", "source_language": "en", "target_language": "es"}


def register(base_url: str, url: str, **body: Any) -> dict[str, Any]:
    made = httpx.post(f"{base_url}/_mockglot/webhooks", json={"url": url, "api_key": KEY, **body})
    assert made.status_code == 201, made.text
    return made.json()


def deliveries(base_url: str, **filters: str) -> list[dict[str, Any]]:
    found = httpx.get(f"{base_url}/_mockglot/webhooks/deliveries", params=filters)
    assert found.status_code == 200, found.text
    return found.json()["data"]


def eventually(read: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 20) -> Any:
    """Poll until `done(read())`: deliveries, and the workers' view of them, happen in the background."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"condition not met within {timeout} s: {value}"
        time.sleep(0.05)


def settled(count: int) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda ds: (
        len(ds) == 1 and len(ds[0]["attempts"]) == count and ds[0]["attempts"][-1]["latency_ms"] is not None
    )


def set_clock(base_url: str, iso: str) -> None:
    moment = datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    assert httpx.post(f"{base_url}/_mockglot/clock", json={"set": moment}).status_code == 200


def test_each_event_reaches_the_receiver_once_whichever_worker_it_happened_on(
    pair: list[ServerThread], webhook_receiver: WebhookReceiver
) -> None:
    a, b = pair
    endpoint = register(a.base_url, webhook_receiver.url)

    async def scenario() -> list[str]:
        async with Client(a.base_url, KEY) as on_a, Client(b.base_url, KEY) as on_b:
            streamed = await on_a.create_session(**BODY)  # created on A, streamed on B, ended through A
            stream = await on_b.open_stream(on(b.base_url, streamed))
            await stream.until("session.ready")
            await stream.send_audio("customer", utterance())
            await stream.until("transcript.final", timeout=20)
            await on_a.end_session(streamed["id"])
            await stream.until("session.ended")
            rest = await on_b.create_session(**BODY)  # created on B, ended on A
            await on_a.end_session(rest["id"])
            return [streamed["id"], rest["id"]]

    sessions = asyncio.run(scenario())
    everything = eventually(
        lambda: deliveries(a.base_url),
        lambda ds: len(ds) == 8 and all(d["status"] == "succeeded" for d in ds),
    )
    # the same list on both workers, once A's attempts are written back (in the background, within 50 ms)
    eventually(lambda: deliveries(b.base_url), lambda ds: ds == everything)
    received = webhook_receiver.requests
    assert sorted(r.header("kallglot-webhook-id") for r in received) == sorted(d["id"] for d in everything)
    assert sorted(r.json()["id"] for r in received) == sorted(d["event_id"] for d in everything)
    assert len({d["event_id"] for d in everything}) == len(everything)  # one delivery per event, none twice
    for request in received:
        request.verify(endpoint["secret"])
    assert [(d["session_id"], d["event_type"]) for d in everything] == [
        *((sessions[0], t) for t in ("session.created", "session.started", "transcript.segment")),
        *((sessions[0], t) for t in ("session.ended", "transcript.ready")),
        *((sessions[1], t) for t in ("session.created", "session.ended", "transcript.ready")),
    ]

    # A redelivery asked of B is sent by B, and A lists it too.
    original = everything[0]
    copy = httpx.post(f"{b.base_url}/_mockglot/webhooks/deliveries/{original['id']}/redeliver")
    assert copy.status_code == 202, copy.text
    webhook_receiver.wait(len(everything) + 1)
    again = eventually(
        lambda: deliveries(a.base_url, session_id=original["session_id"]),
        lambda ds: any(d["redelivery_of"] == original["id"] and d["status"] == "succeeded" for d in ds),
    )
    eventually(lambda: deliveries(b.base_url, session_id=original["session_id"]), lambda ds: ds == again)
    assert webhook_receiver.requests[-1].json()["id"] == original["event_id"]


def test_a_retry_left_by_a_stopped_worker_is_sent_by_another(
    pair: list[ServerThread], webhook_receiver: WebhookReceiver
) -> None:
    a, b = pair
    webhook_receiver.fail(1)
    endpoint = register(a.base_url, webhook_receiver.url, events=["session.created"])
    made = httpx.post(f"{b.base_url}/v1/sessions", json=BODY, headers={"Authorization": f"Bearer {KEY}"})
    assert made.status_code == 201
    (pending,) = eventually(lambda: deliveries(a.base_url), settled(1))  # B's attempt, seen from A
    assert pending["status"] == "pending" and pending["attempts"][0]["status_code"] == 500
    b.stop()
    set_clock(a.base_url, pending["next_attempt_at"])
    _, retried = webhook_receiver.wait(2)
    assert retried.header("kallglot-webhook-id") == pending["id"]
    assert retried.header("kallglot-retry-count") == "1"
    retried.verify(endpoint["secret"], now=a.state.clock.now())
    (done,) = eventually(lambda: deliveries(a.base_url), settled(2))
    assert done["status"] == "succeeded" and [x["status_code"] for x in done["attempts"]] == [500, 200]
    assert len(webhook_receiver.requests) == 2


def test_a_killed_workers_deliveries_are_taken_over_even_one_in_flight(
    redis: str, webhook_receiver: WebhookReceiver
) -> None:
    """SIGKILL while an attempt waits for the receiver: another worker counts it failed and retries it."""
    port = free_port()
    env = {**os.environ, "MOCKGLOT_STATE": redis, "MOCKGLOT_PORT": str(port), "MOCKGLOT_OUTPUT_PACE": "instant"}
    other = subprocess.Popen([sys.executable, "-m", "mockglot", "serve"], env=env, stdout=subprocess.DEVNULL)
    (a,) = workers(redis, 1)
    b_url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(b_url)
        webhook_receiver.hang(1)
        register(a.base_url, webhook_receiver.url, events=["session.created"])
        made = httpx.post(f"{b_url}/v1/sessions", json=BODY, headers={"Authorization": f"Bearer {KEY}"})
        assert made.status_code == 201
        webhook_receiver.wait(1)
        eventually(lambda: deliveries(a.base_url), lambda ds: len(ds) == 1 and len(ds[0]["attempts"]) == 1)
        other.send_signal(signal.SIGKILL)
        other.wait(10)
        (lost,) = eventually(lambda: deliveries(a.base_url), settled(1))
        assert lost["status"] == "pending" and "stopped" in lost["attempts"][0]["error"]
        set_clock(a.base_url, lost["next_attempt_at"])
        _, retried = webhook_receiver.wait(2)
        assert retried.header("kallglot-retry-count") == "1"
        (done,) = eventually(lambda: deliveries(a.base_url), settled(2))
        assert done["status"] == "succeeded"
    finally:
        webhook_receiver.release()
        other.kill()
        other.wait(10)
        a.stop()


def test_settings_endpoints_sign_with_one_secret_on_every_worker(redis: str, webhook_receiver: WebhookReceiver) -> None:
    servers = workers(redis, webhooks=[webhook_receiver.url])
    try:
        secrets = [next(iter(s.state.webhooks.endpoints.values())).secret for s in servers]
        assert secrets[0] == secrets[1] and secrets[0].startswith("whsec_")
        for server in servers:
            made = httpx.post(f"{server.base_url}/v1/sessions", json=BODY, headers={"Authorization": f"Bearer {KEY}"})
            assert made.status_code == 201
        for request in webhook_receiver.wait(2):
            request.verify(secrets[0])
    finally:
        for server in servers:
            server.stop()
