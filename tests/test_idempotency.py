"""Idempotency keys (kallglot-api.md §4): replay the first success, refuse a different request, never act twice."""

from __future__ import annotations

import asyncio

import httpx

from tests.checks import BASIC

DAY = 24 * 60 * 60


def key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": value}


async def test_a_repeat_replays_the_first_response_and_costs_nothing(client, state):
    first = await client.post("/v1/sessions", json=BASIC, headers=key("k1"))
    assert first.status_code == 201
    assert "idempotent-replayed" not in first.headers
    assert first.headers["x-api-credits-used"] == "1"

    for _ in range(3):
        replay = await client.post("/v1/sessions", json=BASIC, headers=key("k1"))
        assert replay.status_code == 201
        assert replay.content == first.content
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.headers["x-api-credits-used"] == "1"
        assert replay.headers["x-request-id"] != first.headers["x-request-id"]
    assert len(state.sessions.all()) == 1


async def test_the_body_is_compared_as_json_not_as_bytes(client):
    first = await client.post(
        "/v1/sessions", content=b'{"mode": "ai_agent", "ai_agent": {"voice": "nova", "system_prompt": "x"}}',
        headers={**key("k1"), "Content-Type": "application/json"},
    )  # fmt: skip
    assert first.status_code == 201
    again = await client.post(
        "/v1/sessions", content=b'{"ai_agent":{"system_prompt":"x","voice":"nova"},"mode":"ai_agent"}',
        headers={**key("k1"), "Content-Type": "application/json"},
    )  # fmt: skip
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json()["id"] == first.json()["id"]


async def test_without_a_key_every_create_is_new(client, state):
    first = await client.post("/v1/sessions", json=BASIC)
    second = await client.post("/v1/sessions", json=BASIC)
    assert first.json()["id"] != second.json()["id"]
    assert second.headers["x-api-credits-used"] == "2"
    assert len(state.sessions.all()) == 2


async def test_end_replays_its_summary(client, state):
    session = (await client.post("/v1/sessions", json=BASIC)).json()
    path = f"/v1/sessions/{session['id']}/end"
    first = await client.post(path, headers=key("end-1"))
    state.clock.advance(30)
    replay = await client.post(path, headers=key("end-1"))
    assert replay.status_code == 200
    assert replay.content == first.content
    assert replay.headers["idempotent-replayed"] == "true"


async def test_a_different_body_is_a_mismatch_and_the_key_still_replays(client):
    first = await client.post("/v1/sessions", json=BASIC, headers=key("k1"))
    other = await client.post("/v1/sessions", json={**BASIC, "metadata": {"a": "b"}}, headers=key("k1"))
    assert other.status_code == 400
    assert other.json()["error"]["code"] == "idempotency_mismatch"
    assert other.json()["error"]["param"] == "Idempotency-Key"
    replay = await client.post("/v1/sessions", json=BASIC, headers=key("k1"))
    assert replay.json() == first.json()
    assert other.headers["x-api-credits-used"] == "1"


async def test_a_different_path_is_a_mismatch(client):
    one = (await client.post("/v1/sessions", json=BASIC)).json()
    two = (await client.post("/v1/sessions", json=BASIC)).json()
    assert (await client.post(f"/v1/sessions/{one['id']}/end", headers=key("end"))).status_code == 200
    response = await client.post(f"/v1/sessions/{two['id']}/end", headers=key("end"))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "idempotency_mismatch"
    assert (await client.get(f"/v1/sessions/{two['id']}")).json()["status"] == "created"

    create_then_end = await client.post("/v1/sessions", json={}, headers=key("end"))
    assert create_then_end.json()["error"]["code"] == "idempotency_mismatch"


async def test_errors_are_not_cached_so_the_key_can_be_retried(client, state):
    bad = await client.post("/v1/sessions", json={"mode": "ai_agent"}, headers=key("retry-me"))
    assert bad.status_code == 422
    bad_again = await client.post("/v1/sessions", json={"mode": "ai_agent"}, headers=key("retry-me"))
    assert bad_again.status_code == 422
    assert "idempotent-replayed" not in bad_again.headers

    fixed = {"mode": "ai_agent", "ai_agent": {"system_prompt": "Hi"}}
    good = await client.post("/v1/sessions", json=fixed, headers=key("retry-me"))
    assert good.status_code == 201
    assert "idempotent-replayed" not in good.headers
    replay = await client.post("/v1/sessions", json=fixed, headers=key("retry-me"))
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == good.json()["id"]
    assert len(state.sessions.all()) == 1


async def test_a_failed_end_leaves_the_key_free(client):
    path = "/v1/sessions/sess_01HXYZ0000000000000000000/end"
    assert (await client.post(path, headers=key("e"))).status_code == 404
    assert (await client.post(path, headers=key("e"))).status_code == 404
    session = (await client.post("/v1/sessions", json=BASIC)).json()
    response = await client.post(f"/v1/sessions/{session['id']}/end", headers=key("e"))
    assert response.status_code == 200


async def test_an_out_of_credit_attempt_is_not_cached(make_app, make_client):
    app = make_app(keys=[{"key": "sk_test_twocredit12", "organization": "org_a", "credits": 1}])
    client = make_client(app, "sk_test_twocredit12")
    assert (await client.post("/v1/sessions", json=BASIC)).status_code == 201
    refused = await client.post("/v1/sessions", json=BASIC, headers=key("k"))
    assert refused.status_code == 402
    app.state.mockglot.keys.get("sk_test_twocredit12").balance.credits = 2  # topped up, as the control plane will
    retried = await client.post("/v1/sessions", json=BASIC, headers=key("k"))
    assert retried.status_code == 201
    assert "idempotent-replayed" not in retried.headers


async def test_keys_live_24_hours_on_the_server_clock(client, state):
    first = await client.post("/v1/sessions", json=BASIC, headers=key("daily"))
    state.clock.advance(DAY - 1)
    replay = await client.post("/v1/sessions", json=BASIC, headers=key("daily"))
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == first.json()["id"]

    state.clock.advance(2)
    fresh = await client.post("/v1/sessions", json=BASIC, headers=key("daily"))
    assert fresh.status_code == 201
    assert "idempotent-replayed" not in fresh.headers
    assert fresh.json()["id"] != first.json()["id"]
    assert fresh.headers["x-api-credits-used"] == "2"


async def test_an_expired_key_may_be_used_with_a_different_body(client, state):
    await client.post("/v1/sessions", json=BASIC, headers=key("daily"))
    state.clock.advance(DAY + 1)
    other = await client.post("/v1/sessions", json={"mode": "assistive_translation"}, headers=key("daily"))
    assert other.status_code == 201
    assert other.json()["mode"] == "assistive_translation"


async def test_keys_are_scoped_per_organization(app, make_client, make_key, state):
    alice, bob = make_client(app, make_key()), make_client(app, make_key())
    a = await alice.post("/v1/sessions", json=BASIC, headers=key("shared"))
    b = await bob.post("/v1/sessions", json=BASIC, headers=key("shared"))
    assert (a.status_code, b.status_code) == (201, 201)
    assert "idempotent-replayed" not in b.headers
    assert a.json()["id"] != b.json()["id"]
    # bob's different body is not a mismatch with alice's request
    c = await bob.post("/v1/sessions/" + b.json()["id"] + "/end", headers=key("shared-end"))
    d = await alice.post("/v1/sessions/" + a.json()["id"] + "/end", headers=key("shared-end"))
    assert (c.status_code, d.status_code) == (200, 200)
    assert len(state.sessions.all()) == 2


async def test_keys_are_scoped_per_environment(make_app, make_client):
    keys = [
        {"key": "sk_test_orgatest1", "organization": "org_a"},
        {"key": "sk_live_orgalive1", "organization": "org_a"},
    ]
    app = make_app(keys=keys)
    test = await make_client(app, "sk_test_orgatest1").post("/v1/sessions", json=BASIC, headers=key("k"))
    live = await make_client(app, "sk_live_orgalive1").post("/v1/sessions", json=BASIC, headers=key("k"))
    assert "idempotent-replayed" not in live.headers
    assert live.json()["stream"]["token"].startswith("kst_live_")
    assert test.json()["id"] != live.json()["id"]


async def test_get_ignores_the_header(client):
    session = (await client.post("/v1/sessions", json=BASIC)).json()
    for _ in range(2):
        response = await client.get(f"/v1/sessions/{session['id']}", headers=key("g"))
        assert response.status_code == 200
        assert "idempotent-replayed" not in response.headers


# --- concurrency against the real server ------------------------------------------------------------------


async def test_concurrent_creates_with_one_key_make_one_session(server, server_client, api_key):
    responses = await asyncio.gather(
        *(server_client.post("/v1/sessions", json=BASIC, headers=key("burst")) for _ in range(20))
    )
    created = [r for r in responses if r.status_code == 201]
    conflicts = [r for r in responses if r.status_code == 409]
    assert len(created) + len(conflicts) == 20, [r.status_code for r in responses]
    assert created
    assert len({r.content for r in created}) == 1
    assert sum("idempotent-replayed" not in r.headers for r in created) == 1
    for response in conflicts:
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == "idempotency_conflict"

    def usage() -> tuple[int, int]:
        record = server.state.keys.get(api_key)
        return len(server.state.sessions.all(record.organization)), record.credits_used

    assert server.call(usage) == (1, 1)
    retry = await server_client.post("/v1/sessions", json=BASIC, headers=key("burst"))
    assert retry.content == created[0].content


async def test_concurrent_ends_all_get_the_same_summary(server, server_client):
    session = (await server_client.post("/v1/sessions", json=BASIC)).json()
    path = f"/v1/sessions/{session['id']}/end"
    responses = await asyncio.gather(*(server_client.post(path) for _ in range(10)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1


async def test_concurrent_creates_from_many_clients(server, make_key):
    """Different keys in parallel, each with the same Idempotency-Key: one session per organization."""
    keys = [make_key() for _ in range(5)]
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        responses = await asyncio.gather(
            *(
                http.post("/v1/sessions", json=BASIC, headers={"Authorization": f"Bearer {k}", **key("same")})
                for k in keys
                for _ in range(4)
            )
        )
    assert all(r.status_code in (201, 409) for r in responses)

    def per_key() -> list[tuple[int, int]]:
        records = [server.state.keys.get(k) for k in keys]
        return [(len(server.state.sessions.all(r.organization)), r.credits_used) for r in records]

    assert server.call(per_key) == [(1, 1)] * 5


async def test_an_empty_or_overlong_idempotency_key_is_refused(client):
    for key in ("", "k" * 256):
        response = await client.post(
            "/v1/sessions", json={"mode": "bidirectional_translation"}, headers={"Idempotency-Key": key}
        )
        assert response.status_code == 400
        assert (response.json()["error"]["code"], response.json()["error"]["param"]) == (
            "invalid_request",
            "Idempotency-Key",
        )


def test_expired_keys_are_purged_oldest_first():
    from mockglot.state.idempotency import LIFETIME_SECONDS, IdempotencyStore, StoredResponse

    store = IdempotencyStore()
    owner = ("org", "test")
    for index, created in enumerate((0.0, 10.0, 20.0)):
        store.complete(store.begin(owner, f"k{index}", "fp", created), StoredResponse(201, b"{}"))
    store.purge(LIFETIME_SECONDS + 15)
    assert [key for (_, key) in store._records] == ["k2"]


async def test_a_request_that_outlives_a_reset_does_not_answer_for_the_key_claimed_after_it(
    app, client, make_client, api_key
):
    """Held by a latency fault, the first request finishes after a reset let another request claim its key: the
    key then replays the second request's answer (the one it now belongs to), never the first's."""
    control = make_client(app)
    rule = {"method": "POST", "path": "/v1/sessions", "latency_ms": 2000, "times": 1}
    assert (await control.post("/_mockglot/faults/rest", json=rule)).status_code == 201
    held = asyncio.create_task(client.post("/v1/sessions", json=BASIC, headers=key("k")))
    for _ in range(500):  # until the fault has fired (bounded: 5 s)
        if app.state.mockglot.faults.all()[0].fired:
            break
        await asyncio.sleep(0.01)
    assert (await control.post("/_mockglot/reset", json={"api_key": api_key})).status_code == 200
    other = {"mode": "assistive_translation"}
    second = await client.post("/v1/sessions", json=other, headers=key("k"))
    assert second.status_code == 201
    assert (await held).status_code == 201

    replay = await client.post("/v1/sessions", json=other, headers=key("k"))
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == second.json()


async def test_the_oldest_keys_are_forgotten_beyond_the_count_bound(client, monkeypatch):
    """Keys live a day, but a client that sends a fresh key with every request must not grow the server without
    end: past MAX_KEYS the oldest key is forgotten (and acts as new), the others still replay."""
    monkeypatch.setattr("mockglot.state.idempotency.MAX_KEYS", 3)
    first = [await client.post("/v1/sessions", json=BASIC, headers=key(f"k{i}")) for i in range(4)]
    again = [await client.post("/v1/sessions", json=BASIC, headers=key(f"k{i}")) for i in (3, 2, 0)]
    assert [r.headers.get("idempotent-replayed") for r in again] == ["true", "true", None]
    assert again[0].json() == first[3].json()
    assert again[2].json()["id"] != first[0].json()["id"]


async def test_the_oldest_keys_are_forgotten_beyond_the_byte_bound(client, monkeypatch):
    monkeypatch.setattr("mockglot.state.idempotency.MAX_ANSWER_BYTES", 4000)
    big = {**BASIC, "metadata": {f"k{i}": "v" * 400 for i in range(5)}}  # answers of about 2.5 kB
    first = await client.post("/v1/sessions", json=big, headers=key("big-1"))
    second = await client.post("/v1/sessions", json=big, headers=key("big-2"))
    assert (await client.post("/v1/sessions", json=big, headers=key("big-2"))).json() == second.json()
    forgotten = await client.post("/v1/sessions", json=big, headers=key("big-1"))
    assert "idempotent-replayed" not in forgotten.headers
    assert forgotten.json()["id"] != first.json()["id"]


async def test_a_key_keeps_a_digest_of_its_request_not_the_request(client, state):
    """What a key keeps for a day is bounded by the answer's size, not the (up to 1 MiB) request's."""
    tools = [{"name": f"tool{i}", "description": "x" * 1000, "parameters": {"type": "object"}} for i in range(500)]
    body = {**BASIC, "mode": "ai_agent", "ai_agent": {"system_prompt": "x", "tools": tools}}
    assert (await client.post("/v1/sessions", json=body, headers=key("huge"))).status_code == 201
    (claim,) = state.idempotency._records.values()
    assert len(claim.fingerprint) < 100
    changed = {**body, "ai_agent": {"system_prompt": "y", "tools": tools}}
    response = await client.post("/v1/sessions", json=changed, headers=key("huge"))
    assert response.json()["error"]["code"] == "idempotency_mismatch"


async def test_an_empty_body_and_an_empty_object_are_the_same_request(client):
    """`POST .../end` may have an empty body: a retry that sends `{}` instead is the same request, not a mismatch."""
    session = (await client.post("/v1/sessions", json=BASIC)).json()
    path = f"/v1/sessions/{session['id']}/end"
    first = await client.post(path, headers=key("end-once"))
    assert first.status_code == 200
    retry = await client.post(path, json={}, headers=key("end-once"))
    assert (retry.status_code, retry.headers.get("idempotent-replayed")) == (200, "true")
    assert retry.content == first.content
