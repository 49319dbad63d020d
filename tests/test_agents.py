"""Saved agents (kallglot-api.md §6 "Other documented endpoints"): create, retrieve, list with cursors, and a
session's `agent_id`; scoped per organization and environment; scopes; idempotent create."""

from __future__ import annotations

import re

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mockglot import wire
from mockglot.app import create_app
from mockglot.settings import Settings
from tests.checks import expect_error

ULID = r"[0-9A-HJKMNP-TV-Z]{26}"
SUPPORT = {
    "name": "Support",
    "system_prompt": "You help customers change orders.",
    "voice": "nova",
    "temperature": 0.4,
    "knowledge_base_id": "kb_orders",
    "tools": [{"name": "lookup_order", "description": "Find an order", "parameters": {"type": "object"}}],
}


async def create_agents(client, count: int) -> list[str]:
    ids = []
    for index in range(count):
        response = await client.post("/v1/agents", json={"name": f"agent {index}"})
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids


# --- create and retrieve ---------------------------------------------------------------------------------


async def test_create_returns_the_agent_and_retrieve_gives_it_back(client):
    response = await client.post("/v1/agents", json=SUPPORT)
    assert response.status_code == 201, response.text
    agent = response.json()
    assert re.fullmatch("agt_" + ULID, agent["id"])
    assert list(agent) == ["id", "object", "name", *list(SUPPORT)[1:], "created_at"]
    assert agent["object"] == "agent"
    assert {k: agent[k] for k in SUPPORT} == SUPPORT
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", agent["created_at"])
    msgspec.json.decode(response.content, type=wire.Agent)  # the documented shape, as the OpenAPI says

    fetched = await client.get(f"/v1/agents/{agent['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == agent


async def test_only_a_name_is_required_and_unset_fields_are_null(client):
    agent = (await client.post("/v1/agents", json={"name": "Bare"})).json()
    assert [agent[k] for k in ("system_prompt", "voice", "temperature", "knowledge_base_id", "tools")] == [None] * 5


async def test_creating_an_agent_costs_no_credits(client):
    response = await client.post("/v1/agents", json={"name": "Free"})
    assert response.headers["x-api-credits-used"] == "0"


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({}, "missing_required_field", "name"),
        ({"name": ""}, "invalid_field_value", "name"),
        ({"name": "x" * 257}, "invalid_field_value", "name"),
        ({"name": "A", "voice": "robot"}, "invalid_field_value", "voice"),
        ({"name": "A", "temperature": 2.5}, "invalid_field_value", "temperature"),
        ({"name": "A", "knowledge_base_id": "kb-1"}, "invalid_field_value", "knowledge_base_id"),
        ({"name": "A", "tools": [{"name": "has space"}]}, "invalid_field_value", "tools[0].name"),
    ],
)
async def test_an_invalid_agent_is_a_422_naming_the_field(client, body, code, param):
    expect_error(await client.post("/v1/agents", json=body), 422, code, param)


async def test_an_unknown_agent_is_a_404(client):
    error = expect_error(await client.get("/v1/agents/agt_01HXMISSING"), 404, "agent_not_found", "id")
    assert "agt_01HXMISSING" in error["message"]


async def test_another_organizations_agent_is_not_found(client, app, make_client, make_key):
    agent = (await client.post("/v1/agents", json=SUPPORT)).json()
    stranger = make_client(app, make_key())
    expect_error(await stranger.get(f"/v1/agents/{agent['id']}"), 404, "agent_not_found")
    listed = (await stranger.get("/v1/agents")).json()
    assert listed == {"object": "list", "data": [], "has_more": False}


async def test_agents_are_scoped_by_environment_within_an_organization(make_app, make_client):
    keys = ["sk_test_acme00000001", "sk_live_acme00000002", "sk_test_acme00000003"]
    app = make_app(keys=[{"key": key, "organization": "acme"} for key in keys])
    test_key, live_key, other_test_key = (make_client(app, key) for key in keys)
    agent = (await test_key.post("/v1/agents", json=SUPPORT)).json()
    expect_error(await live_key.get(f"/v1/agents/{agent['id']}"), 404, "agent_not_found")
    assert (await other_test_key.get(f"/v1/agents/{agent['id']}")).json() == agent  # same organization and env


async def test_a_reset_of_the_organization_forgets_its_agents(client, state, api_key):
    agent = (await client.post("/v1/agents", json=SUPPORT)).json()
    state.reset(state.keys.get(api_key).organization)
    expect_error(await client.get(f"/v1/agents/{agent['id']}"), 404, "agent_not_found")


async def test_a_seeded_server_gives_the_same_agent_ids(make_app, make_client, make_key):
    """The same organization's: each draws from its own sequence (#10), so another's differ."""
    key = make_key()
    runs = []
    for _ in range(2):
        client = make_client(make_app(seed=7), key)
        runs.append(await create_agents(client, 3))
    assert runs[0] == runs[1]
    assert await create_agents(make_client(make_app(seed=7), make_key()), 3) != runs[0]


# --- scopes and idempotency -------------------------------------------------------------------------------


async def test_scopes_agents_write_and_agents_read(make_app, make_client):
    app = make_app(
        keys=[
            {"key": "sk_test_reader000001", "organization": "acme", "scopes": ["agents:read"]},
            {"key": "sk_test_writer000001", "organization": "acme", "scopes": ["agents:write"]},
        ]
    )
    reader, writer = make_client(app, "sk_test_reader000001"), make_client(app, "sk_test_writer000001")
    error = expect_error(await reader.post("/v1/agents", json=SUPPORT), 403, "insufficient_permissions")
    assert "agents:write" in error["message"]
    agent = (await writer.post("/v1/agents", json=SUPPORT)).json()
    expect_error(await writer.get("/v1/agents"), 403, "insufficient_permissions")
    expect_error(await writer.get(f"/v1/agents/{agent['id']}"), 403, "insufficient_permissions")
    assert (await reader.get(f"/v1/agents/{agent['id']}")).status_code == 200


async def test_an_idempotent_create_replays_and_makes_one_agent(client):
    headers = {"Idempotency-Key": "agent-1"}
    first = await client.post("/v1/agents", json=SUPPORT, headers=headers)
    replay = await client.post("/v1/agents", json=SUPPORT, headers=headers)
    assert (first.status_code, replay.status_code) == (201, 201)
    assert replay.content == first.content
    assert replay.headers["idempotent-replayed"] == "true"
    assert [a["id"] for a in (await client.get("/v1/agents")).json()["data"]] == [first.json()["id"]]
    other = await client.post("/v1/agents", json={**SUPPORT, "name": "Other"}, headers=headers)
    expect_error(other, 400, "idempotency_mismatch")


# --- the list: newest first, cursor pagination ------------------------------------------------------------


async def test_an_empty_list(client):
    response = await client.get("/v1/agents")
    assert response.status_code == 200
    assert response.json() == {"object": "list", "data": [], "has_more": False}


async def test_the_list_is_newest_first_with_a_default_limit_of_20(client):
    ids = await create_agents(client, 22)
    page = (await client.get("/v1/agents")).json()
    assert [a["id"] for a in page["data"]] == ids[::-1][:20]
    assert page["has_more"] is True
    msgspec.json.decode(msgspec.json.encode(page), type=wire.AgentList)
    rest = (await client.get("/v1/agents", params={"starting_after": ids[2]})).json()
    assert [a["id"] for a in rest["data"]] == [ids[1], ids[0]]
    assert rest["has_more"] is False


@pytest.mark.parametrize("limit", ["1", "100", "007"])
async def test_limit_takes_1_to_100(client, limit):
    ids = await create_agents(client, 2)
    page = (await client.get("/v1/agents", params={"limit": limit})).json()
    assert len(page["data"]) == min(int(limit), 2)
    assert page["has_more"] is (int(limit) < 2)
    assert page["data"][0]["id"] == ids[-1]


@pytest.mark.parametrize("limit", ["0", "101", "-1", "1.5", "abc", "", " 5", "1e2", "99999999999999999999"])
async def test_a_limit_out_of_bounds_is_a_422(client, limit):
    error = expect_error(await client.get("/v1/agents", params={"limit": limit}), 422, "invalid_field_value", "limit")
    assert "1 to 100" in error["message"]


async def test_paging_forward_with_starting_after_and_back_with_ending_before(client):
    ids = await create_agents(client, 7)  # agent 0 .. agent 6; the list shows 6 .. 0
    newest_first = ids[::-1]

    async def page(**params):
        body = (await client.get("/v1/agents", params={"limit": 3, **params})).json()
        return [a["id"] for a in body["data"]], body["has_more"]

    first = await page()
    assert first == (newest_first[0:3], True)
    second = await page(starting_after=first[0][-1])
    assert second == (newest_first[3:6], True)
    third = await page(starting_after=second[0][-1])
    assert third == (newest_first[6:7], False)
    beyond = await page(starting_after=third[0][-1])
    assert beyond == ([], False)

    # ending_before: the page just before an agent, still newest first; has_more when newer ones remain.
    assert await page(ending_before=third[0][0]) == (newest_first[3:6], True)
    assert await page(ending_before=second[0][0]) == (newest_first[0:3], False)
    assert await page(ending_before=newest_first[1]) == (newest_first[0:1], False)
    assert await page(ending_before=newest_first[0]) == ([], False)


@pytest.mark.parametrize("cursor", ["starting_after", "ending_before"])
async def test_a_cursor_that_names_no_agent_of_the_key_is_a_422(client, app, make_client, make_key, cursor):
    await create_agents(client, 2)
    for value in ("agt_01HXMISSING", "not-an-id", ""):
        error = expect_error(await client.get("/v1/agents", params={cursor: value}), 422, "invalid_field_value", cursor)
        assert "GET /v1/agents" in error["message"]
    foreign = (await make_client(app, make_key()).post("/v1/agents", json=SUPPORT)).json()["id"]
    expect_error(await client.get("/v1/agents", params={cursor: foreign}), 422, "invalid_field_value", cursor)


async def test_both_cursors_at_once_is_a_422(client):
    ids = await create_agents(client, 3)
    response = await client.get("/v1/agents", params={"starting_after": ids[2], "ending_before": ids[0]})
    expect_error(response, 422, "invalid_field_value", "ending_before")


# --- sessions that name a saved agent ----------------------------------------------------------------------


async def test_a_saved_agent_satisfies_ai_agent_mode_and_overrides_apply_on_top(client, state):
    agent = (await client.post("/v1/agents", json=SUPPORT)).json()
    response = await client.post(
        "/v1/sessions",
        json={"mode": "ai_agent", "agent_id": agent["id"], "overrides": {"voice": "echo", "temperature": 1.5}},
    )
    assert response.status_code == 201, response.text
    session = state.sessions.find(response.json()["id"])
    config = session.request.ai_agent
    assert (config.voice, config.temperature) == ("echo", 1.5)  # overridden
    assert (config.system_prompt, config.knowledge_base_id) == (SUPPORT["system_prompt"], "kb_orders")  # saved
    assert [t.name for t in config.tools] == ["lookup_order"]
    plain = await client.post("/v1/sessions", json={"mode": "ai_agent", "agent_id": agent["id"]})
    assert state.sessions.find(plain.json()["id"]).request.ai_agent.voice == "nova"


async def test_a_saved_agent_may_back_other_modes(client):
    agent = (await client.post("/v1/agents", json=SUPPORT)).json()
    response = await client.post("/v1/sessions", json={"mode": "help_chat_voice", "agent_id": agent["id"]})
    assert response.status_code == 201


async def test_another_organizations_agent_id_is_ai_agent_not_found(client, app, make_client, make_key):
    foreign = (await make_client(app, make_key()).post("/v1/agents", json=SUPPORT)).json()
    response = await client.post("/v1/sessions", json={"mode": "ai_agent", "agent_id": foreign["id"]})
    error = expect_error(response, 422, "ai_agent_not_found", "agent_id")
    assert "POST /v1/agents" in error["message"]


async def test_an_inline_agent_and_a_saved_one_together_is_a_422(client):
    agent = (await client.post("/v1/agents", json=SUPPORT)).json()
    response = await client.post(
        "/v1/sessions", json={"mode": "ai_agent", "agent_id": agent["id"], "ai_agent": {"voice": "alloy"}}
    )
    error = expect_error(response, 422, "invalid_field_value", "ai_agent")
    assert "`overrides`" in error["message"]


async def test_overrides_without_agent_id_are_still_rejected(client):
    response = await client.post(
        "/v1/sessions", json={"mode": "ai_agent", "ai_agent": {}, "overrides": {"voice": "echo"}}
    )
    expect_error(response, 422, "invalid_field_value", "overrides")


async def test_invalid_overrides_name_the_override_field(client):
    agent = (await client.post("/v1/agents", json=SUPPORT)).json()
    response = await client.post(
        "/v1/sessions", json={"mode": "ai_agent", "agent_id": agent["id"], "overrides": {"temperature": 9}}
    )
    expect_error(response, 422, "invalid_field_value", "overrides.temperature")


async def test_the_openapi_document_covers_the_other_documented_endpoints(client):
    """Every endpoint of §6's "Other documented endpoints", generated from the endpoint tables."""
    paths = (await client.get("/openapi.json")).json()["paths"]
    session = "/v1/sessions/{session_id}"
    sessions_api = {"/v1/sessions", session, f"{session}/end", f"{session}/transcript"}
    assert {path: sorted(methods) for path, methods in paths.items() if path not in sessions_api} == {
        f"{session}/dial": ["post"],
        f"{session}/recordings": ["get"],
        "/v1/recordings/{recording_id}": ["delete", "get"],
        "/v1/recordings/{recording_id}/audio": ["get"],
        f"{session}/analysis": ["post"],
        "/v1/analyses/{analysis_id}": ["get"],
        "/v1/agents": ["get", "post"],
        "/v1/agents/{agent_id}": ["get"],
    }
    assert "audio/mpeg" in paths["/v1/recordings/{recording_id}/audio"]["get"]["responses"]["200"]["content"]
    create = paths["/v1/agents"]["post"]
    assert create["responses"].keys() >= {"201", "403", "422"}
    assert any(p["name"] == "Idempotency-Key" for p in create["parameters"])
    assert {p["name"] for p in paths["/v1/agents"]["get"]["parameters"]} == {"limit", "starting_after", "ending_before"}


# --- no input is a 500 -------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
agent_bodies = st.fixed_dictionaries(
    {},
    optional={
        name: st.one_of(valid, json_values)
        for name, valid in {
            "name": st.text(max_size=300),
            "system_prompt": st.text(max_size=20),
            "voice": st.sampled_from(["alloy", "echo", "fable", "onyx", "nova", "shimmer"]),
            "temperature": st.floats(min_value=-1, max_value=3, allow_nan=False),
            "knowledge_base_id": st.from_regex(r"kb_[a-z0-9]{1,5}", fullmatch=True),
            "tools": st.lists(st.fixed_dictionaries({"name": st.text(max_size=12)}), max_size=2),
            "extra": json_values,
        }.items()
    },
)
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
FUZZ_APP = create_app(Settings(seed=21))
FUZZ_KEY = {"Authorization": "Bearer sk_test_agentfuzz0001"}


@FUZZ
@given(
    body=agent_bodies,
    query=st.dictionaries(st.sampled_from(["limit", "starting_after", "ending_before"]), st.text(max_size=12)),
)
async def test_any_agent_body_or_list_query_is_a_documented_answer(body, query):
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=FUZZ_APP), base_url="http://testserver", headers=FUZZ_KEY
    ) as client:
        created = await client.post("/v1/agents", json=body)
        assert created.status_code in (201, 422), created.text
        if created.status_code == 201:
            assert created.json()["name"] == body["name"]
        else:
            assert created.json()["error"]["param"]
        listed = await client.get("/v1/agents", params=query)
        assert listed.status_code in (200, 422), listed.text
        if listed.status_code == 422:
            assert listed.json()["error"]["param"] in query


# --- bounded -----------------------------------------------------------------------------------------------


async def test_past_the_bound_the_oldest_saved_agent_is_forgotten_and_its_sessions_keep_theirs(client, monkeypatch):
    from mockglot.state import agents

    monkeypatch.setattr(agents, "MAX_AGENTS", 3)
    oldest = (await client.post("/v1/agents", json={**SUPPORT, "name": "oldest"})).json()["id"]
    session = await client.post(
        "/v1/sessions",
        json={"mode": "ai_agent", "source_language": "en", "target_language": "en", "agent_id": oldest},
    )
    assert session.status_code == 201, session.text
    newer = await create_agents(client, 3)
    expect_error(await client.get(f"/v1/agents/{oldest}"), 404, "agent_not_found")
    listed = (await client.get("/v1/agents")).json()["data"]
    assert [agent["id"] for agent in listed] == newer[::-1]
    again = await client.get(f"/v1/sessions/{session.json()['id']}")
    assert again.status_code == 200, again.text


async def test_agents_are_bounded_by_bytes_too(client, monkeypatch):
    from mockglot.state import agents

    monkeypatch.setattr(agents, "MAX_AGENT_BYTES", 3000)
    big = {"name": "big", "system_prompt": "x" * 1200}
    first, second, third = [(await client.post("/v1/agents", json=big)).json()["id"] for _ in range(3)]
    expect_error(await client.get(f"/v1/agents/{first}"), 404, "agent_not_found")
    for kept in (second, third):
        assert (await client.get(f"/v1/agents/{kept}")).status_code == 200


async def test_a_tool_schema_with_a_number_beyond_64_bits_is_a_422_for_agents_and_inline_agents(client):
    tools = [{"name": "t", "parameters": {"type": "object", "maximum": 480081807359045368020992}}]
    error = expect_error(
        await client.post("/v1/agents", json={"name": "a", "tools": tools}), 422, "invalid_field_value"
    )
    assert error["param"] == "tools[0]" and "64 bits" in error["message"], error
    inline = {"system_prompt": "Help.", "voice": "nova", "tools": tools}
    body = {"mode": "ai_agent", "source_language": "en", "target_language": "en", "ai_agent": inline}
    error = expect_error(await client.post("/v1/sessions", json=body), 422, "invalid_field_value")
    assert error["param"] == "ai_agent.tools[0]", error
    tools[0]["parameters"]["maximum"] = 2**64 - 1  # the largest that fits is kept as sent
    created = await client.post("/v1/agents", json={"name": "a", "tools": tools})
    assert created.json()["tools"][0]["parameters"]["maximum"] == 2**64 - 1
