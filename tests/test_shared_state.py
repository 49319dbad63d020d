"""Several workers sharing one real Redis (`--state redis://`): what a client sees must not depend on which
worker answers. Each worker is a real uvicorn server; a round-robin balancer sends each request to the next."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from mockglot.conformance.runner import run_checks
from mockglot.testing.client import Client, utterance
from mockglot.testing.server import AppThread, ServerThread
from mockglot.testing.webhooks import WebhookReceiver
from tests.containers import wait_healthy
from tests.ports import free_port
from tests.redis_server import RedisServer
from tests.roundrobin import RoundRobin
from tests.shared_workers import on, workers

KEY = "sk_test_sharedstate01"
BODY = {"mode": "bidirectional_translation", "source_language": "en", "target_language": "es"}
JSON_TYPE = {"Content-Type": "application/json"}


def auth(key: str = KEY, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **extra}


def test_a_session_made_on_one_worker_is_the_same_session_on_the_other(pair: list[ServerThread]) -> None:
    a, b = pair
    with httpx.Client() as http:
        made = http.post(f"{a.base_url}/v1/sessions", json=BODY, headers=auth(**{"Idempotency-Key": "one"}))
        assert made.status_code == 201
        session = made.json()
        seen = http.get(f"{b.base_url}/v1/sessions/{session['id']}", headers=auth())
        assert seen.status_code == 200 and seen.json()["status"] == "created"
        assert seen.json()["stream"]["token"] == session["stream"]["token"]
        ended = http.post(f"{b.base_url}/v1/sessions/{session['id']}/end", headers=auth())
        assert ended.status_code == 200 and ended.json()["status"] == "ended"
        again = http.get(f"{a.base_url}/v1/sessions/{session['id']}", headers=auth())
        assert again.json()["status"] == "ended"
        transcript = http.get(f"{a.base_url}/v1/sessions/{session['id']}/transcript", headers=auth())
        assert transcript.status_code == 200
        # another organization sees none of it, on either worker
        other = http.get(f"{b.base_url}/v1/sessions/{session['id']}", headers=auth("sk_test_someoneelse01"))
        assert other.status_code == 404


def test_an_agent_saved_on_one_worker_is_the_same_agent_on_the_other(pair: list[ServerThread]) -> None:
    """Agents were each worker's own: on the other worker a GET was a 404 and `agent_id` a 422."""
    a, b = pair
    with httpx.Client(timeout=20) as http:
        made = [
            http.post(
                f"{a.base_url}/v1/agents", json={"name": f"agent{i}", "system_prompt": "Be brief."}, headers=auth()
            )
            for i in range(3)
        ]
        assert [r.status_code for r in made] == [201] * 3
        agent = made[0].json()
        assert http.get(f"{b.base_url}/v1/agents/{agent['id']}", headers=auth()).json() == agent
        page = http.get(f"{b.base_url}/v1/agents", params={"limit": 2}, headers=auth()).json()
        assert [x["id"] for x in page["data"]] == [made[2].json()["id"], made[1].json()["id"]]
        assert page["has_more"] is True
        session = http.post(
            f"{b.base_url}/v1/sessions", json={"mode": "ai_agent", "agent_id": agent["id"]}, headers=auth()
        )
        assert session.status_code == 201, session.text
        assert http.post(f"{b.base_url}/_mockglot/reset", json={"api_key": KEY}).status_code == 200
        assert http.get(f"{a.base_url}/v1/agents/{agent['id']}", headers=auth()).status_code == 404


def test_a_provider_leg_dialed_on_both_workers_connects_once_and_disconnects_once(pair: list[ServerThread]) -> None:
    """Each worker kept its own legs: a dial on each announced `connected` twice, and an end on a worker that had
    not dialed announced no `disconnected`."""
    a, b = pair
    routed = {**BODY, "routing": {"phone_number": "+4930123456"}}
    legs = ["session.provider.connected", "session.provider.disconnected"]
    with WebhookReceiver() as receiver, httpx.Client(timeout=20) as http:
        hook = {"url": receiver.url, "api_key": KEY, "events": legs}
        assert http.post(f"{a.base_url}/_mockglot/webhooks", json=hook).status_code == 201
        for ender in (a, b):
            session = http.post(f"{a.base_url}/v1/sessions", json=routed, headers=auth()).json()
            for server in (a, b):
                dialed = http.post(f"{server.base_url}/v1/sessions/{session['id']}/dial", json={}, headers=auth())
                assert dialed.status_code == 202, dialed.text
            assert http.post(f"{ender.base_url}/v1/sessions/{session['id']}/end", headers=auth()).status_code == 200
            found = http.get(f"{b.base_url}/_mockglot/webhooks/deliveries", params={"session_id": session["id"]})
            assert [d["event_type"] for d in found.json()["data"]] == legs


def test_a_stream_token_reissued_on_one_worker_opens_the_stream_on_the_other(pair: list[ServerThread]) -> None:
    """A GET after the token expired reissues it: the other worker must know the new token (and refuse none)."""
    a, b = pair

    async def scenario() -> tuple[str, str, dict[str, Any]]:
        async with Client(a.base_url, KEY) as on_a:
            session = await on_a.create_session(**BODY)
            http = on_a.http
            moved = await http.post(f"{a.base_url}/_mockglot/clock", json={"advance": 301})
            assert moved.status_code == 200
            fresh = (await http.get(f"{a.base_url}/v1/sessions/{session['id']}", headers=auth())).json()
            stream = await on_a.open_stream(on(b.base_url, fresh), token=fresh["stream"]["token"])
            ready = await stream.until("session.ready")
            await http.post(f"{a.base_url}/_mockglot/clock", json={"reset": True})
            return session["stream"]["token"], fresh["stream"]["token"], ready

    old, new, ready = asyncio.run(scenario())
    assert new != old
    assert ready["type"] == "session.ready"


def test_a_body_sent_in_chunks_is_read_whole_and_one_over_the_limit_is_refused(pair: list[ServerThread]) -> None:
    """A worker on shared state reads the body before it holds the state: in pieces as a client streams it."""
    a, b = pair
    payload = json.dumps(BODY).encode()

    def pieces(data: bytes, size: int) -> Any:
        for start in range(0, len(data), size):
            yield data[start : start + size]

    with httpx.Client() as http:
        made = http.post(f"{a.base_url}/v1/sessions", content=pieces(payload, 7), headers=auth(**JSON_TYPE))
        assert made.status_code == 201, made.text
        seen = http.get(f"{b.base_url}/v1/sessions/{made.json()['id']}", headers=auth())
        assert seen.json()["mode"] == BODY["mode"]
        too_big = http.post(
            f"{a.base_url}/v1/sessions", content=pieces(b"x" * (3 * 1024 * 1024), 64 * 1024), headers=auth(**JSON_TYPE)
        )
        assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "request_too_large"


def test_sixty_four_identical_creates_across_two_workers_make_one_session_and_one_charge(
    pair: list[ServerThread],
) -> None:
    a, b = pair

    async def race() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as http:
            headers = auth(**{"Idempotency-Key": "the-same-key"})
            return await asyncio.gather(
                *(http.post(f"{(a, b)[i % 2].base_url}/v1/sessions", json=BODY, headers=headers) for i in range(64))
            )

    answers = asyncio.run(race())
    made = {r.json()["id"] for r in answers if r.status_code == 201}
    assert len(made) == 1, [r.status_code for r in answers]
    assert all(r.status_code in (201, 409) for r in answers), {r.status_code for r in answers}
    with httpx.Client() as http:
        after = http.post(f"{a.base_url}/v1/sessions", json=BODY, headers=auth(**{"Idempotency-Key": "next"}))
    assert after.headers["x-api-credits-used"] == "2"  # the race's one session, and this one


def test_credits_never_go_below_zero_when_workers_race(redis: str, tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keys": [{"key": KEY, "organization": "org_race", "credits": 10}]}))
    servers = workers(redis, keys=str(keys))
    try:

        async def race() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as http:
                return await asyncio.gather(
                    *(
                        http.post(
                            f"{servers[i % 2].base_url}/v1/sessions",
                            json=BODY,
                            headers=auth(**{"Idempotency-Key": f"k{i}"}),
                        )
                        for i in range(40)
                    )
                )

        answers = asyncio.run(race())
    finally:
        for server in servers:
            server.stop()
    statuses = sorted(r.status_code for r in answers)
    assert statuses.count(201) == 10 and statuses.count(402) == 30, statuses
    assert min(int(r.headers["x-api-credits-remaining"]) for r in answers) == 0


def test_a_rest_end_on_one_worker_closes_the_stream_held_by_the_other(pair: list[ServerThread]) -> None:
    a, b = pair

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        async with Client(a.base_url, KEY) as on_a, Client(b.base_url, KEY) as on_b:
            session = await on_a.create_session(**BODY)
            stream = await on_b.open_stream(on(b.base_url, session))
            await stream.until("session.ready")
            assert b.state.sessions.lookup(session["id"]).worker == b.state.sessions.worker
            await stream.send_audio("customer", utterance())
            await stream.until("transcript.final", timeout=20)
            # the worker without the socket refuses a second one, and forwards what only the socket's worker has
            second = await on_a.open_stream(on(a.base_url, session))
            refused = await second.until("session.error")
            http = on_a.http
            frames = (await http.get(f"{a.base_url}/_mockglot/sessions/{session['id']}/frames")).json()
            assert frames["count"] > 2  # the journal, kept by the worker the stream runs on
            # a request run on B for A counts once against the key's rate limit, not on both workers
            first = await http.get(f"{a.base_url}/v1/sessions/{session['id']}", headers=auth())
            second = await http.get(f"{a.base_url}/v1/sessions/{session['id']}", headers=auth())
            used = int(first.headers["x-ratelimit-remaining"]) - int(second.headers["x-ratelimit-remaining"])
            assert first.status_code == second.status_code == 200 and used == 1
            ended = await on_a.end_session(session["id"])
            told = await stream.until("session.ended")
            return refused, ended, told

    refused, ended, told = asyncio.run(scenario())
    assert refused["error"]["code"] == "session_already_connected"
    assert ended["status"] == "ended"
    assert told["reason"] == "api_end"


def test_the_conformance_suite_passes_against_two_workers_with_every_request_alternating(
    pair: list[ServerThread],
) -> None:
    balancer = RoundRobin([server.base_url for server in pair])
    with AppThread(balancer) as front:
        report = asyncio.run(run_checks(front.base_url, "sk_test_conformance1"))
    failed = [(r.id, r.reason) for r in report.results if r.status == "FAIL"]
    assert not failed
    assert sum(1 for r in report.results if r.status == "PASS") >= 40
    assert set(balancer.sent) == {0, 1} and len(balancer.sent) > 100


def test_a_lost_redis_answers_503_and_service_resumes_when_it_is_back(
    pair: list[ServerThread], redis_server: RedisServer
) -> None:
    a, b = pair
    with httpx.Client(timeout=20) as http:
        made = http.post(f"{a.base_url}/v1/sessions", json=BODY, headers=auth(**{"Idempotency-Key": "before"}))
        assert made.status_code == 201
        redis_server.stop()
        try:
            lost = http.post(f"{b.base_url}/v1/sessions", json=BODY, headers=auth(**{"Idempotency-Key": "during"}))
            assert lost.status_code == 503
            assert lost.json()["error"]["code"] == "service_unavailable"
            assert "Redis" in lost.json()["error"]["message"]
            assert http.get(f"{a.base_url}/_mockglot/health").status_code == 200  # probes still answer
        finally:
            redis_server.start()  # empty: it was not persisting
        for server in (a, b):  # service resumes by itself, and what was confirmed before is still there
            seen = http.get(f"{server.base_url}/v1/sessions/{made.json()['id']}", headers=auth())
            assert seen.status_code == 200, seen.text


def test_redis_lost_during_a_request_s_delay_answers_503_not_500(
    pair: list[ServerThread], redis_server: RedisServer
) -> None:
    """A request waits without holding the state (a fault's latency); when Redis is gone by the time it takes the
    state back, it answers 503. It answered 500: its end let go of a lock it no longer held."""
    a, _ = pair
    with httpx.Client(timeout=20) as http:
        fault = {"method": "GET", "path": "/v1/sessions/*", "latency_ms": 1500, "api_key": KEY}
        assert http.post(f"{a.base_url}/_mockglot/faults/rest", json=fault).status_code == 201

        def stop_redis_meanwhile() -> None:
            time.sleep(0.5)
            redis_server.stop()

        stopper = threading.Thread(target=stop_redis_meanwhile)
        stopper.start()
        try:
            delayed = http.get(f"{a.base_url}/v1/sessions/sess_nothing", headers=auth())
        finally:
            stopper.join()
            redis_server.start()
        assert delayed.status_code == 503, delayed.text
        assert delayed.json()["error"]["code"] == "service_unavailable"
        seen = http.get(f"{a.base_url}/v1/sessions/sess_nothing", headers=auth())  # service resumes
        assert seen.status_code == 404, seen.text


def test_a_killed_worker_lets_its_sessions_reconnect_on_another(redis: str, tmp_path: Path) -> None:
    """Killed (SIGKILL) with a live stream: the client sees the socket close and reconnects on another worker."""
    port = free_port()
    env = {**os.environ, "MOCKGLOT_STATE": redis, "MOCKGLOT_PORT": str(port), "MOCKGLOT_OUTPUT_PACE": "instant"}
    other = subprocess.Popen([sys.executable, "-m", "mockglot", "serve"], env=env, stdout=subprocess.PIPE)
    (a,) = workers(redis, 1)
    b_url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(b_url, alive=lambda: other.poll() is None)

        async def scenario() -> dict[str, Any]:
            async with Client(a.base_url, KEY) as on_a, Client(b_url, KEY) as on_b:
                session = await on_a.create_session(**BODY)
                stream = await on_b.open_stream(on(b_url, session))
                await stream.until("session.ready")
                await stream.send_audio("customer", utterance())
                await stream.until("transcript.final", timeout=20)
                await asyncio.sleep(0.5)  # a stream's progress is saved within FLUSH_DELAY_SECONDS (0.05 s)
                other.send_signal(signal.SIGKILL)
                with pytest.raises(Exception):  # noqa: B017  (closed, whichever way the library says it)
                    await stream.until("never", timeout=10)
                for _ in range(50):  # the other worker notices within a heartbeat or two
                    fresh = await on_a.get_session(session["id"])
                    again = await on_a.open_stream(on(a.base_url, fresh))
                    first = await again.recv()
                    if first["type"] == "session.ready":
                        transcript = await on_a.transcript(session["id"])
                        return {"ready": first, "transcript": transcript}
                    await asyncio.sleep(0.2)
                raise AssertionError(f"never reconnected: {first}")

        outcome = asyncio.run(scenario())
    finally:
        other.kill()
        other.wait(10)
        a.stop()
    assert outcome["ready"]["type"] == "session.ready"
    assert outcome["transcript"]["turns"]  # what the killed worker had saved is still there


def test_the_request_journal_read_on_any_worker_holds_every_worker_s_requests(pair: list[ServerThread]) -> None:
    a, b = pair
    time.sleep(1.5)  # a heartbeat: each worker knows the other
    with httpx.Client() as http:
        sent = []
        for i in range(6):
            server = (a, b)[i % 2]
            answer = http.post(
                f"{server.base_url}/v1/sessions", json=BODY, headers=auth(**{"Idempotency-Key": f"j{i}"})
            )
            sent.append(answer.headers["x-request-id"])
        for server in (a, b):
            journal = http.get(f"{server.base_url}/_mockglot/requests", params={"api_key": KEY}).json()["data"]
            assert [entry["request_id"] for entry in journal] == sent  # all of them, in the order they were served
            newest = http.get(f"{server.base_url}/_mockglot/requests", params={"api_key": KEY, "limit": 2}).json()
            assert [entry["request_id"] for entry in newest["data"]] == sent[-2:]


def test_the_contract_report_read_on_any_worker_counts_every_worker_s_requests(pair: list[ServerThread]) -> None:
    a, b = pair
    time.sleep(1.5)  # a heartbeat: each worker knows the other
    with httpx.Client() as http:
        for i in range(4):  # creates without an Idempotency-Key: a violation each, two on each worker
            assert http.post(f"{(a, b)[i % 2].base_url}/v1/sessions", json=BODY, headers=auth()).status_code == 201
        for server in (a, b):
            report = http.get(f"{server.base_url}/_mockglot/contract", params={"api_key": KEY}).json()
            assert report["coverage"]["operations"]["POST /v1/sessions"] == 4
            missing = [v for v in report["violations"] if v["kind"] == "missing_idempotency_key"]
            assert missing and missing[0]["count"] == 4


def test_the_inspector_feed_on_one_worker_shows_what_happens_on_the_other(pair: list[ServerThread]) -> None:
    a, b = pair
    with httpx.Client(timeout=10) as http:
        made = http.post(f"{b.base_url}/v1/sessions", json=BODY, headers=auth(**{"Idempotency-Key": "feed"}))
        session_id = made.json()["id"]
        deadline = time.monotonic() + 10
        seen: list[str] = []
        while time.monotonic() < deadline and "session.created" not in seen:
            with http.stream("GET", f"{a.base_url}/_mockglot/events", headers={"Last-Event-ID": "0"}) as events:
                for line in events.iter_lines():
                    if line.startswith("data: ") and session_id in line:
                        seen.append(json.loads(line[6:])["type"])
                    if line == "" and seen:
                        break
                    if "session.created" in seen or time.monotonic() > deadline:
                        break
    assert "session.created" in seen  # created on B, told by A's event stream


def test_the_feed_is_relayed_only_while_an_inspector_is_open(pair: list[ServerThread], redis: str) -> None:
    """Relaying every frame to every worker cost a fifth of two workers' CPU (bench/RESULTS.md): while no inspector
    is open nothing crosses Redis; once one opens on A, B's events reach it, the ones from before it opened too."""
    import redis as redis_py

    a, b = pair
    with redis_py.Redis.from_url(redis) as client, client.pubsub() as listener, httpx.Client(timeout=10) as http:
        listener.subscribe("mockglot:feed")
        listener.get_message(timeout=1)  # the subscription's confirmation
        before = http.post(f"{b.base_url}/v1/sessions", json=BODY, headers=auth()).json()["id"]
        time.sleep(0.3)  # (B relays every 20 ms when it relays at all)
        assert listener.get_message(timeout=0.2) is None, "B relayed its feed while nobody watched"
        seen: set[str] = set()
        after = ""
        with http.stream("GET", f"{a.base_url}/_mockglot/events") as events:
            for line in events.iter_lines():
                if line.startswith("data: "):
                    event = json.loads(line[6:])
                    if event["type"] == "session.created":
                        seen.add(event["session_id"])
                if before in seen and not after:  # B's past arrived: now something new on B
                    after = http.post(f"{b.base_url}/v1/sessions", json=BODY, headers=auth()).json()["id"]
                if after in seen:
                    break
    assert {before, after} <= seen


# --- the lock's lease: kept by the worker that last held it, handed over when another asks -------------------


def lock_holder(redis: str) -> str | None:
    """Which worker holds the shared state's lock in Redis now (its value is `<worker>|<token>`)."""
    import redis as redis_py

    with redis_py.Redis.from_url(redis) as client:
        held = client.get("mockglot:lock")
    return None if held is None else held.decode().rpartition("|")[0]


def test_requests_alternating_between_two_workers_each_see_the_last_change(pair: list[ServerThread]) -> None:
    """Each worker keeps the lock after its requests; the other asks for it and is answered, never a 503."""
    a, b = pair
    with httpx.Client(timeout=20) as http:
        for round_ in range(10):
            made = http.post(f"{a.base_url}/v1/sessions", json=BODY, headers=auth(**{"Idempotency-Key": f"k{round_}"}))
            assert made.status_code == 201, made.text
            ended = http.post(f"{b.base_url}/v1/sessions/{made.json()['id']}/end", headers=auth())
            assert ended.status_code == 200, ended.text
            seen = http.get(f"{a.base_url}/v1/sessions/{made.json()['id']}", headers=auth())
            assert seen.status_code == 200 and seen.json()["status"] == "ended"


def test_a_worker_that_stops_lets_the_lock_go(pair: list[ServerThread], redis: str) -> None:
    a, b = pair
    with httpx.Client(timeout=20) as http:
        made = http.post(f"{a.base_url}/v1/sessions", json=BODY, headers=auth(**{"Idempotency-Key": "stop"}))
        assert lock_holder(redis) == a.state.coordinator.worker
        a.stop()
        assert lock_holder(redis) is None  # the other worker need not wait for the lease to run out
        seen = http.get(f"{b.base_url}/v1/sessions/{made.json()['id']}", headers=auth())
        assert seen.status_code == 200 and seen.json()["status"] == "created"


def test_a_worker_whose_lease_was_lost_answers_503_then_serves_what_the_other_wrote(
    pair: list[ServerThread], redis: str
) -> None:
    """The lock gone from under its holder (its lease ran out): the holder's next save is refused, so that
    request answers 503 (nothing it did is kept), and the one after it reloads the state and is answered."""
    import redis as redis_py

    a, b = pair
    with httpx.Client(timeout=20) as http:
        made = http.post(f"{a.base_url}/v1/sessions", json=BODY, headers=auth(**{"Idempotency-Key": "lost"}))
        session_id = made.json()["id"]
        with redis_py.Redis.from_url(redis) as client:
            client.delete("mockglot:lock")
        ended = http.post(f"{b.base_url}/v1/sessions/{session_id}/end", headers=auth())
        assert ended.status_code == 200
        again = auth(**{"Idempotency-Key": "after"})
        refused = http.post(f"{a.base_url}/v1/sessions", json=BODY, headers=again)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "service_unavailable"
        seen = http.get(f"{a.base_url}/v1/sessions/{session_id}", headers=auth())
        assert seen.status_code == 200 and seen.json()["status"] == "ended"
        retried = http.post(f"{a.base_url}/v1/sessions", json=BODY, headers=again)
        assert retried.status_code == 201  # the refused create was not kept: its key is free, not a replay
        assert "idempotent-replayed" not in retried.headers


def test_a_rate_limit_counts_reads_on_every_worker(redis: str) -> None:
    """A read changes only its key's count, which is saved after the response (with the next save, or when the
    lock goes to another worker): the other worker counts it all the same."""
    a, b = workers(redis, rate_limit=4)
    try:
        with httpx.Client(timeout=20) as http:
            made = http.post(f"{a.base_url}/v1/sessions", json=BODY, headers=auth())
            path = f"/v1/sessions/{made.json()['id']}"
            for server in (a, b, a):
                assert http.get(f"{server.base_url}{path}", headers=auth()).status_code == 200
            refused = http.get(f"{b.base_url}{path}", headers=auth())
            assert refused.status_code == 429, refused.text
    finally:
        a.stop()
        b.stop()


def test_concurrent_requests_on_one_worker_are_all_seen_by_the_other(pair: list[ServerThread]) -> None:
    """Requests that end while an earlier one's changes are being saved are saved together: every one answered
    is in Redis, and the other worker sees it."""
    a, b = pair

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as http:
            return await asyncio.gather(
                *(
                    http.post(f"{a.base_url}/v1/sessions", json=BODY, headers=auth(**{"Idempotency-Key": f"c{i}"}))
                    for i in range(32)
                )
            )

    made = asyncio.run(burst())
    assert [r.status_code for r in made] == [201] * 32
    with httpx.Client(timeout=20) as http:
        for response in made:
            seen = http.get(f"{b.base_url}/v1/sessions/{response.json()['id']}", headers=auth())
            assert seen.status_code == 200, seen.text
        after = http.post(f"{b.base_url}/v1/sessions", json=BODY, headers=auth(**{"Idempotency-Key": "last"}))
    assert after.headers["x-api-credits-used"] == "33"


def test_a_commit_of_thousands_of_documents_is_saved_whole(redis: str) -> None:
    """An emptied Redis is refilled by one commit of every document a worker knows; a document gone is deleted
    and logged by the same commit."""
    import redis as redis_py

    from mockglot.shared.coordinator import _COMMIT

    client = redis_py.Redis.from_url(redis)
    # keys of its own: no worker that shares this Redis later may load these documents
    keys = [f"commit-test:{name}" for name in ("lock", "ver", "log", "docs", "floor", "changed")]
    documents = [(f"sessions/s{i}", b"x%d" % i) for i in range(5000)] + [("sessions/gone", b"")]
    args = ["w|token", "w", "1", 10_000, "0", "", *(part for pair in documents for part in pair)]
    try:
        client.set(keys[0], "w|token")
        client.hset(keys[3], "sessions/gone", b"old")
        assert client.eval(_COMMIT, len(keys), *keys, *args) == 1
        assert client.hlen(keys[3]) == 5000 and client.hget(keys[3], "sessions/s4999") == b"x4999"
        assert not client.hexists(keys[3], "sessions/gone")
        assert client.zcard(keys[2]) == 5001 and client.zscore(keys[2], "sessions/gone") == 1
    finally:
        client.delete(*keys)
        client.close()


def test_a_hold_cancelled_before_its_commit_went_out_still_has_it_sent(redis: str) -> None:
    """A request cancelled in the loop turn its commit waits (for others to join it) left the batch unsent until
    the next save went: up to a second and more, during which a request that read its change waited."""
    from mockglot.settings import Settings
    from mockglot.shared.coordinator import RedisCoordinator
    from mockglot.state.server import ServerState

    async def scenario() -> tuple[float, int]:
        state = ServerState(Settings(state=redis))
        coordinator = RedisCoordinator(redis, state)
        state.share(coordinator, coordinator.worker, coordinator.alive)
        await coordinator.start()
        try:

            async def hold(change: float) -> None:
                held = await coordinator.enter()
                try:
                    if change:
                        state.clock.advance(change)  # a document to save
                finally:
                    await coordinator.leave(held)

            await hold(0)  # takes the lock: the holds below run without a round trip until they save
            cancelled = asyncio.create_task(hold(60))
            await asyncio.sleep(0)  # it staged its change and waits one loop turn before sending it
            assert coordinator._batch is not None and coordinator._sending is None
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            await asyncio.sleep(0)
            assert coordinator._batch is None  # on its way to Redis, not left for the next save
            await asyncio.wait_for(hold(0), 5)  # waits for what it may have read: the cancelled one's change
            version = coordinator.version
        finally:
            await coordinator.stop()
        fresh = ServerState(Settings(state=redis))
        other = RedisCoordinator(redis, fresh)
        fresh.share(other, other.worker, other.alive)
        await other.start()  # loads what Redis holds
        await other.stop()
        return fresh.clock.offset, version

    offset, version = asyncio.run(scenario())
    assert offset == 60 and version >= 1
