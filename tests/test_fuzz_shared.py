"""Fuzzing two workers that share a real Redis: whatever a client sends, to whichever worker, no request gives a
500, every error is the documented envelope, and the two answer exactly as one in-memory server with the same
seed would (statuses, error codes and params, session IDs and states).

Each example is a fresh API key, so a fresh organization on both sides: its seeded IDs start afresh there.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mockglot.settings import Settings
from mockglot.testing.server import ServerThread
from tests.fuzzing import check_response, content_types, json_values, session_bodies
from tests.shared_workers import workers

SEED = 20261204
KEYS = (f"sk_test_fuzzshared{n:06d}" for n in itertools.count())

VALID = st.sampled_from(
    [
        {"mode": "bidirectional_translation", "source_language": "de", "target_language": "en"},
        {"mode": "assistive_translation", "source_language": "ko", "target_language": "en"},
        {"mode": "ai_agent", "ai_agent": {}},
    ]
)
OPERATIONS = st.one_of(
    st.tuples(st.just("create"), VALID | session_bodies | json_values, st.sampled_from([None, "k1", "k2"])),
    # Over real HTTP: a header value with whitespace at either end never leaves the client (h11 refuses it).
    st.tuples(st.just("bytes"), st.binary(max_size=60), content_types.map(str.strip)),
    st.tuples(st.just("get"), st.integers(0, 3)),
    st.tuples(st.just("end"), st.integers(0, 3)),
    st.tuples(st.just("transcript"), st.integers(0, 3), st.sampled_from(["", "text", "srt", "vtt", "x"])),
    st.tuples(
        st.just("fault"),
        st.sampled_from(["/v1/sessions", "/v1/sessions/*", "/v1/*"]),
        st.sampled_from([{"status": 503}, {"error_code": "rate_limit_exceeded"}, {"error_code": "internal_error"}]),
        st.sampled_from([1.0, 0.5]),
    ),
)


class Clients:
    """Worker A, worker B and the single server, each over its own keep-alive connection."""

    def __init__(self, a: ServerThread, b: ServerThread, alone: ServerThread) -> None:
        self.pair = [httpx.Client(base_url=a.base_url), httpx.Client(base_url=b.base_url)]
        self.alone = httpx.Client(base_url=alone.base_url)

    def close(self) -> None:
        for client in (*self.pair, self.alone):
            client.close()


@pytest.fixture(scope="module")
def clients(redis_server) -> Iterator[Clients]:
    redis_server.flush()
    a, b = workers(redis_server.url, seed=SEED)
    alone = ServerThread(Settings(port=0, seed=SEED, output_pace="instant")).start()
    made = Clients(a, b, alone)
    yield made
    made.close()
    for server in (a, b, alone):
        server.stop()


def request(client: httpx.Client, key: str, operation: tuple[Any, ...], sessions: list[str]) -> httpx.Response:
    auth = {"Authorization": f"Bearer {key}"}
    name = operation[0]
    if name == "create":
        _, body, idempotency_key = operation
        headers = {**auth, "Content-Type": "application/json"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return client.post("/v1/sessions", content=json.dumps(body).encode(), headers=headers)
    if name == "fault":  # armed for this key only: the examples stay apart
        _, path, answer, probability = operation
        rule = {"api_key": key, "path": path, "times": 1, "probability": probability, **answer}
        return client.post("/_mockglot/faults/rest", json=rule)
    if name == "bytes":
        _, body, content_type = operation
        return client.post("/v1/sessions", content=body, headers={**auth, "Content-Type": content_type})
    session = sessions[operation[1] % len(sessions)] if sessions else "sess_unknown"
    if name == "get":
        return client.get(f"/v1/sessions/{session}", headers=auth)
    if name == "end":
        return client.post(f"/v1/sessions/{session}/end", headers=auth)
    query = {"format": operation[2]} if operation[2] else None
    return client.get(f"/v1/sessions/{session}/transcript", params=query, headers=auth)


def outcome(operation: tuple[Any, ...], response: httpx.Response) -> tuple[Any, ...]:
    """What a client acts on, leaving out what differs by the wall clock (timestamps) or by worker (request IDs)."""
    error = check_response(response, faults_armed=True)
    if error is not None:
        return response.status_code, error["code"], error["param"]
    if operation[0] == "fault":
        return (response.status_code,)
    if operation[0] == "transcript" and operation[2]:
        return response.status_code, response.headers["content-type"], response.text
    body = response.json()
    if operation[0] == "transcript":
        return response.status_code, body["id"], body["status"], body["turns"]
    return response.status_code, body["id"], body["status"], body.get("mode")


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(steps=st.lists(st.tuples(st.booleans(), OPERATIONS), min_size=1, max_size=10))
def test_two_workers_on_redis_answer_any_requests_as_one_server(clients: Clients, steps) -> None:
    key = next(KEYS)
    shared: list[str] = []
    alone: list[str] = []
    for on_a, operation in steps:
        theirs = request(clients.pair[0 if on_a else 1], key, operation, shared)
        mine = request(clients.alone, key, operation, alone)
        assert outcome(operation, theirs) == outcome(operation, mine), (operation, theirs.text, mine.text)
        if operation[0] == "create" and theirs.status_code == 201:
            shared.append(theirs.json()["id"])
            alone.append(mine.json()["id"])
