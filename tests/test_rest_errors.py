"""Every row of the error table (kallglot-api.md §3) that REST can produce today.

Each test checks what a client branches on (status, `error.type`, `error.code`), the field at fault
(`error.param`, a dotted path), and that the message tells the user how to fix the request.
"""

from __future__ import annotations

import asyncio
import codecs
import gzip

import httpx
import pytest
from starlette.routing import Route

from mockglot import render
from mockglot.api.endpoint import Endpoint, PublicEndpoint, Reply
from mockglot.app import create_app
from mockglot.errors import CATALOGUE
from mockglot.settings import Settings
from mockglot.state.auth import load_keys_file
from mockglot.state.replica import Elsewhere
from mockglot.state.server import ServerState
from tests.checks import BASIC, create

JSON = {"Content-Type": "application/json"}


def expect_error(response: httpx.Response, status: int, code: str, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["type"] == CATALOGUE[code].type
    assert error["param"] == param
    assert error["request_id"] == response.headers["x-request-id"]
    assert error["message"]
    if status not in (409, 429):
        assert "retry_after" not in error
    return error


# --- 400 invalid_request ----------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"{not json", b'{"mode": ', b"\xff\xfe{}", b"{'mode': 'ai_agent'}"])
async def test_a_body_that_is_not_json(client, body):
    error = expect_error(await client.post("/v1/sessions", content=body, headers=JSON), 400, "invalid_request")
    assert "not valid JSON" in error["message"]


async def test_a_gzip_compressed_body_is_named_as_such(server_client):
    """It was "invalid character (byte 0)"."""
    body = gzip.compress(b'{"mode": "bidirectional_translation"}')
    response = await server_client.post("/v1/sessions", content=body, headers={**JSON, "Content-Encoding": "gzip"})
    message = expect_error(response, 400, "invalid_request")["message"]
    assert "looks gzip-compressed" in message and "send it as plain JSON" in message
    assert "without Content-Encoding" in message and "byte 0" not in message


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
async def test_a_utf16_body_is_named_as_such(server_client, encoding):
    """It was "invalid character (byte 0)" or msgspec's words for a stray byte (PowerShell writes UTF-16)."""
    body = '{"mode": "assistive_translation"}'.encode(encoding)
    response = await server_client.post("/v1/sessions", content=body, headers=JSON)
    message = expect_error(response, 400, "invalid_request")["message"]
    assert "looks UTF-16 encoded" in message and "send JSON as UTF-8" in message


async def test_a_leading_utf8_byte_order_mark_is_ignored(server_client):
    """RFC 8259 §8.1 lets a parser ignore it; a file saved by a Windows editor and sent with curl has one."""
    body = codecs.BOM_UTF8 + b'{"mode": "assistive_translation"}'
    response = await server_client.post("/v1/sessions", content=body, headers=JSON)
    assert response.status_code == 201, response.text
    assert response.json()["mode"] == "assistive_translation"
    response = await server_client.post("/v1/sessions", content=codecs.BOM_UTF8 + body, headers=JSON)
    message = expect_error(response, 400, "invalid_request")["message"]  # one is a file's; two is a client's bug
    assert "starts with a byte order mark" in message


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "\\ud83d\\u0041", "\\ude00\\ud83d"])
async def test_a_lone_surrogate_escape_is_named_not_called_truncated(server_client, escape):
    body = b'{"mode": "bidirectional_translation", "metadata": {"note": "' + escape.encode() + b'"}}'
    response = await server_client.post("/v1/sessions", content=body, headers=JSON)
    message = expect_error(response, 400, "invalid_request")["message"]
    assert f"the escape {escape[:6]} (at byte 60) is half of a UTF-16 surrogate pair" in message
    assert "send whole characters" in message and "truncated" not in message


@pytest.mark.parametrize(
    ("body", "kind"),
    [(b"[]", "not an array"), (b'"x"', "not a string"), (b"4.2", "not a number"), (b"null", "not null")],
)
async def test_a_body_that_is_not_an_object(client, body, kind):
    error = expect_error(await client.post("/v1/sessions", content=body, headers=JSON), 400, "invalid_request")
    assert "must be a JSON object" in error["message"]
    assert kind in error["message"]


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded", "json"])
async def test_a_body_with_the_wrong_content_type(client, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.post("/v1/sessions", content=b'{"mode": "ai_agent"}', headers=headers)
    error = expect_error(response, 400, "invalid_request")
    assert "Content-Type: application/json" in error["message"]


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "Application/JSON"])
async def test_json_content_type_variants_are_accepted(client, content_type):
    response = await client.post(
        "/v1/sessions", content=b'{"mode": "assistive_translation"}', headers={"Content-Type": content_type}
    )
    assert response.status_code == 201


async def test_an_empty_create_body(client):
    error = expect_error(await client.post("/v1/sessions", headers=JSON), 400, "invalid_request")
    assert "empty" in error["message"]
    assert "JSON object" in error["message"]


async def test_end_rejects_a_body_that_is_not_an_object(client):
    session = await create(client)
    response = await client.post(f"/v1/sessions/{session['id']}/end", content=b"[1]", headers=JSON)
    expect_error(response, 400, "invalid_request")


async def test_a_body_over_one_megabyte(client):
    body = b'{"mode": "ai_agent", "pad": "' + b"x" * (1024 * 1024) + b'"}'
    error = expect_error(await client.post("/v1/sessions", content=body, headers=JSON), 413, "request_too_large")
    assert "larger than" in error["message"]


async def test_a_body_nested_too_deeply_is_a_400_not_a_crash(client):
    body = b'{"mode": "ai_agent", "deep": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    error = expect_error(await client.post("/v1/sessions", content=body, headers=JSON), 400, "invalid_request")
    assert "nested too deeply" in error["message"]


# --- 400 idempotency_mismatch -----------------------------------------------------------------------------


async def test_an_idempotency_key_reused_with_another_body(client):
    await create(client, headers={"Idempotency-Key": "order-1"})
    response = await client.post(
        "/v1/sessions", json={**BASIC, "target_language": "fr"}, headers={"Idempotency-Key": "order-1"}
    )
    error = expect_error(response, 400, "idempotency_mismatch", "Idempotency-Key")
    assert "new key" in error["message"]


# --- 401 --------------------------------------------------------------------------------------------------


async def test_no_api_key(app, make_client):
    error = expect_error(await make_client(app).post("/v1/sessions", json=BASIC), 401, "invalid_api_key")
    assert "No API key provided" in error["message"]
    assert "Authorization: Bearer" in error["message"]
    assert "X-API-Key" in error["message"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer sk_test_short"},
        {"Authorization": "Bearer pk_test_abcdefgh1234"},
        {"Authorization": "Bearer sk_prod_abcdefgh1234"},
        {"Authorization": "Bearer sk_test_abcd-efgh-1234"},
        {"X-API-Key": "sk_live_1234"},
        {"X-API-Key": ""},
    ],
)
async def test_a_malformed_api_key(app, make_client, headers):
    response = await make_client(app).get("/v1/sessions/sess_x", headers=headers)
    error = expect_error(response, 401, "invalid_api_key")
    assert "malformed" in error["message"]
    assert "at least 8 letters or digits" in error["message"]


@pytest.mark.parametrize("authorization", ["sk_test_abcdefgh1234", "Basic c2tfdGVzdA==", "Bearer", "Bearer   "])
async def test_an_authorization_header_without_bearer(app, make_client, authorization):
    response = await make_client(app).get("/v1/sessions/sess_x", headers={"Authorization": authorization})
    error = expect_error(response, 401, "invalid_api_key")
    assert "Bearer sk_test_" in error["message"]


async def test_a_stream_token_is_not_an_api_key(client, app, make_client):
    session = await create(client)
    token = session["stream"]["token"]
    response = await make_client(app).get(f"/v1/sessions/{session['id']}", headers={"X-API-Key": token})
    error = expect_error(response, 401, "invalid_api_key")
    assert "WebSocket" in error["message"]
    assert token not in error["message"]


async def test_the_key_can_come_in_x_api_key(app, make_client, make_key):
    key = make_key()
    created = await create(make_client(app, key))
    response = await make_client(app).get(f"/v1/sessions/{created['id']}", headers={"X-API-Key": key})
    assert response.status_code == 200


async def test_an_unknown_key_in_configured_mode(make_app, make_client, make_key):
    app = make_app(keys=[{"key": "sk_test_listed12345", "organization": "org_a"}])
    assert (await make_client(app, "sk_test_listed12345").post("/v1/sessions", json=BASIC)).status_code == 201
    stranger = make_key()
    error = expect_error(await make_client(app, stranger).post("/v1/sessions", json=BASIC), 401, "invalid_api_key")
    assert "Unknown API key" in error["message"]
    assert "keys file" in error["message"]
    assert stranger not in error["message"]  # redacted, never echoed whole


async def test_a_revoked_key(make_app, make_client):
    app = make_app(keys=[{"key": "sk_test_revoked1234", "organization": "org_a", "revoked": True}])
    response = await make_client(app, "sk_test_revoked1234").post("/v1/sessions", json=BASIC)
    error = expect_error(response, 401, "revoked_api_key")
    assert "revoked" in error["message"]
    assert "Use another key" in error["message"]


# --- 402 / 403 --------------------------------------------------------------------------------------------


async def test_out_of_credits(make_app, make_client):
    app = make_app(keys=[{"key": "sk_test_onecredit12", "organization": "org_a", "credits": 1}])
    client = make_client(app, "sk_test_onecredit12")
    first = await client.post("/v1/sessions", json=BASIC, headers={"Idempotency-Key": "k1"})
    assert first.status_code == 201
    assert (first.headers["x-api-credits-used"], first.headers["x-api-credits-remaining"]) == ("1", "0")

    error = expect_error(await client.post("/v1/sessions", json=BASIC), 402, "insufficient_api_credits")
    assert "credits" in error["message"]
    assert "keys file" in error["message"]

    replay = await client.post("/v1/sessions", json=BASIC, headers={"Idempotency-Key": "k1"})
    assert replay.status_code == 201
    assert replay.json() == first.json()
    assert replay.headers["x-api-credits-used"] == "1"
    # reading and ending cost nothing
    assert (await client.get(f"/v1/sessions/{first.json()['id']}")).status_code == 200
    assert (await client.post(f"/v1/sessions/{first.json()['id']}/end")).status_code == 200
    assert len(app.state.mockglot.sessions.all()) == 1


async def test_credits_belong_to_the_organization(make_app, make_client):
    """(r2) Every key of an organization draws on, and reports, one balance; another organization keeps its own."""
    app = make_app(
        keys=[
            {"key": "sk_test_acmefirst01", "organization": "acme", "credits": 2},
            {"key": "sk_live_acmesecond1", "organization": "acme"},
            {"key": "sk_test_otherorg001", "organization": "other", "credits": 1},
        ]
    )
    first, second = make_client(app, "sk_test_acmefirst01"), make_client(app, "sk_live_acmesecond1")
    one = await first.post("/v1/sessions", json=BASIC)
    assert (one.headers["x-api-credits-used"], one.headers["x-api-credits-remaining"]) == ("1", "1")
    two = await second.post("/v1/sessions", json=BASIC)  # the other key (and environment) of the same organization
    assert (two.headers["x-api-credits-used"], two.headers["x-api-credits-remaining"]) == ("2", "0")
    error = expect_error(await first.post("/v1/sessions", json=BASIC), 402, "insufficient_api_credits")
    assert "acme" in error["message"] and "shared by all its keys" in error["message"]
    read = await second.get(f"/v1/sessions/{two.json()['id']}")
    assert (read.headers["x-api-credits-used"], read.headers["x-api-credits-remaining"]) == ("2", "0")
    other = await make_client(app, "sk_test_otherorg001").post("/v1/sessions", json=BASIC)
    assert (other.headers["x-api-credits-used"], other.headers["x-api-credits-remaining"]) == ("1", "0")


async def test_topping_up_one_key_tops_up_its_organization(make_app, make_client):
    app = make_app(
        keys=[
            {"key": "sk_test_acmefirst01", "organization": "acme", "credits": 0},
            {"key": "sk_test_acmesecond1", "organization": "acme"},
        ]
    )
    second = make_client(app, "sk_test_acmesecond1")
    expect_error(await second.post("/v1/sessions", json=BASIC), 402, "insufficient_api_credits")
    control = make_client(app)
    topped = await control.post("/_mockglot/keys", json={"key": "sk_test_acmefirst01", "credits": 1})
    assert topped.json()["credits_remaining"] == 1
    assert (await second.post("/v1/sessions", json=BASIC)).status_code == 201
    keys = {k["organization"]: k for k in (await control.get("/_mockglot/keys")).json()["data"]}
    assert (keys["acme"]["credits_used"], keys["acme"]["credits_remaining"]) == (1, 0)


def test_a_keys_file_whose_keys_disagree_on_an_organizations_credits_is_refused(tmp_path):
    path = tmp_path / "keys.json"
    path.write_text(
        '{"keys": [{"key": "sk_test_acmefirst01", "organization": "acme", "credits": 5},'
        ' {"key": "sk_test_acmesecond1", "organization": "acme", "credits": 7}]}'
    )
    with pytest.raises(ValueError, match="credits belong to the organization"):
        load_keys_file(path)


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ('{"key": "sk_test_acmefirst01", "organization": "acme", "credits": -1}',
         r"Expected `int` >= 0 - at `\$.keys\[0\].credits`"),
        ('{"key": "sk_test_acmefirst01", "organization": "acme", "rate_limit": 0}',
         r"Expected `int` >= 1 - at `\$.keys\[0\].rate_limit`"),
        ('{"key": "sk_test_acmefirst01", "organization": "acme"}, {"key": "sk_test_acmefirst01", "organization": "b"}',
         r"`sk_test_…st01` is listed twice; list each key once"),
    ],
)  # fmt: skip
def test_a_keys_file_entry_that_cannot_work_is_refused_at_start(tmp_path, entries, message):
    """Negative credits and `rate_limit: 0` (every request a 429) were taken, and a key listed twice kept
    one of its entries silently; the control plane refuses the first two, so the file does too."""
    path = tmp_path / "keys.json"
    path.write_text(f'{{"keys": [{entries}]}}')
    with pytest.raises(ValueError, match=message):
        load_keys_file(path)


def test_a_keys_file_with_a_pre_r2_scope_name_is_refused_with_the_new_name(tmp_path):
    path = tmp_path / "keys.json"
    path.write_text('{"keys": [{"key": "sk_test_acmefirst01", "organization": "acme", "scopes": ["analyses:read"]}]}')
    with pytest.raises(ValueError, match="analyses:read is now analysis:read"):
        load_keys_file(path)


async def test_an_inactive_organization(make_app, make_client):
    app = make_app(keys=[{"key": "sk_test_inactive123", "organization": "org_a", "inactive": True}])
    response = await make_client(app, "sk_test_inactive123").post("/v1/sessions", json=BASIC)
    error = expect_error(response, 403, "organization_inactive")
    assert "org_a" in error["message"]
    assert "Reactivate" in error["message"]


async def test_a_key_without_the_write_scope(make_app, make_client):
    app = make_app(keys=[{"key": "sk_test_readonly123", "organization": "org_a", "scopes": ["sessions:read"]}])
    client = make_client(app, "sk_test_readonly123")
    error = expect_error(await client.post("/v1/sessions", json=BASIC), 403, "insufficient_permissions")
    assert "`sessions:write`" in error["message"]
    assert "it has: sessions:read" in error["message"]
    assert len(app.state.mockglot.sessions.all()) == 0
    expect_error(await client.post("/v1/sessions/sess_x/end"), 403, "insufficient_permissions")
    # reading is allowed: an unknown session is a 404, not a 403
    expect_error(await client.get("/v1/sessions/sess_x"), 404, "session_not_found", "id")


async def test_a_key_without_the_read_scope(make_app, make_client):
    keys = [
        {"key": "sk_test_writeonly12", "organization": "org_a", "scopes": ["sessions:write"]},
        {"key": "sk_test_noscopes123", "organization": "org_a", "scopes": []},
    ]
    app = make_app(keys=keys)
    client = make_client(app, "sk_test_writeonly12")
    session = await create(client)
    for path in (f"/v1/sessions/{session['id']}", f"/v1/sessions/{session['id']}/transcript"):
        error = expect_error(await client.get(path), 403, "insufficient_permissions")
        assert "`sessions:read`" in error["message"]
    error = expect_error(
        await make_client(app, "sk_test_noscopes123").post("/v1/sessions", json=BASIC), 403, "insufficient_permissions"
    )
    assert "it has: none" in error["message"]


@pytest.mark.parametrize(
    ("scopes", "method", "path", "needed"),
    [
        (["sessions:write"], "POST", "/v1/sessions/{sid}/analysis", "analysis:write"),
        (["analysis:write"], "GET", "/v1/analyses/anl_x", "analysis:read"),
        (["analysis:read"], "GET", "/v1/sessions/{sid}/recordings", "recordings:read"),
        (["recordings:read"], "DELETE", "/v1/recordings/rec_x", "recordings:delete"),
        (["sessions:read"], "POST", "/v1/agents", "agents:write"),
        (["agents:write"], "GET", "/v1/agents", "agents:read"),
    ],
)
async def test_the_documented_scope_names(make_app, make_client, scopes, method, path, needed):
    """(r2) `analysis:read`/`analysis:write` as documented, plus the emulator's agents and recordings:delete."""
    app = make_app(
        keys=[
            {"key": "sk_test_scopedkey01", "organization": "acme", "scopes": scopes},
            {"key": "sk_test_allscopes01", "organization": "acme"},
        ]
    )
    sid = (await create(make_client(app, "sk_test_allscopes01")))["id"]
    response = await make_client(app, "sk_test_scopedkey01").request(method, path.format(sid=sid), json={})
    error = expect_error(response, 403, "insufficient_permissions")
    assert f"`{needed}`" in error["message"]


@pytest.mark.parametrize("scope", ["analyses:read", "analyses:write", "sessions:admin"])
async def test_an_unknown_scope_is_refused_with_the_known_names(make_app, make_client, scope):
    control = make_client(make_app())
    response = await control.post("/_mockglot/keys", json={"key": "sk_test_scopedkey01", "scopes": [scope]})
    error = expect_error(response, 422, "invalid_field_value", "scopes")
    assert "analysis:read, analysis:write" in error["message"]
    if scope.startswith("analyses"):
        assert f"{scope} is now {scope.replace('analyses', 'analysis')}" in error["message"]


# --- 404 --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "/transcript", "/end"])
async def test_an_unknown_session(client, suffix):
    method = client.post if suffix == "/end" else client.get
    error = expect_error(await method(f"/v1/sessions/sess_01HXYZ0000000000000000000{suffix}"), 404,
                         "session_not_found", "id")  # fmt: skip
    assert "sess_01HXYZ0000000000000000000" in error["message"]


@pytest.mark.parametrize("suffix", ["", "/transcript", "/end"])
async def test_another_organizations_session_is_not_found(client, app, make_client, make_key, suffix):
    session = await create(client)
    other = make_client(app, make_key())
    method = other.post if suffix == "/end" else other.get
    expect_error(await method(f"/v1/sessions/{session['id']}{suffix}"), 404, "session_not_found", "id")
    assert (await client.get(f"/v1/sessions/{session['id']}")).json()["status"] == "created"


async def test_sessions_are_scoped_by_environment_within_an_organization(make_app, make_client):
    keys = [
        {"key": "sk_test_orgatest1", "organization": "org_a"},
        {"key": "sk_test_orgatest2", "organization": "org_a"},
        {"key": "sk_live_orgalive1", "organization": "org_a"},
    ]
    app = make_app(keys=keys)
    test_session = await create(make_client(app, "sk_test_orgatest1"))
    live_session = await create(make_client(app, "sk_live_orgalive1"))

    sibling = make_client(app, "sk_test_orgatest2")
    assert (await sibling.get(f"/v1/sessions/{test_session['id']}")).status_code == 200
    expect_error(await sibling.get(f"/v1/sessions/{live_session['id']}"), 404, "session_not_found", "id")
    live = make_client(app, "sk_live_orgalive1")
    expect_error(await live.get(f"/v1/sessions/{test_session['id']}"), 404, "session_not_found", "id")
    assert (await live.get(f"/v1/sessions/{live_session['id']}")).status_code == 200


async def test_open_mode_live_and_test_keys_do_not_see_each_other(app, make_client, make_key):
    suffix = make_key().removeprefix("sk_test_")
    session = await create(make_client(app, f"sk_test_{suffix}"))
    response = await make_client(app, f"sk_live_{suffix}").get(f"/v1/sessions/{session['id']}")
    expect_error(response, 404, "session_not_found", "id")


async def test_an_unknown_route(client):
    error = expect_error(await client.post("/v1/sesions", json=BASIC), 404, "route_not_found")
    assert "/openapi.json" in error["message"]


# --- 405 --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v1/sessions", "POST"),
        ("DELETE", "/v1/sessions/sess_x", "GET, HEAD"),
        ("PUT", "/v1/sessions/sess_x/end", "POST"),
        ("POST", "/v1/sessions/sess_x/transcript", "GET, HEAD"),
    ],
)
async def test_a_method_the_path_does_not_take(client, method, path, allow):
    response = await client.request(method, path)
    error = expect_error(response, 405, "method_not_allowed")
    assert method in error["message"]
    assert set(response.headers["allow"].split(", ")) == set(allow.split(", "))


# --- 409 idempotency_conflict -----------------------------------------------------------------------------


async def test_an_idempotency_key_in_flight_is_a_conflict(make_client, make_key):
    """A handler that waits on a gate keeps the first request in flight while a second one arrives."""
    state = ServerState(Settings())
    entered, gate = asyncio.Event(), asyncio.Event()

    async def slow(ctx):
        entered.set()
        await gate.wait()
        return Reply(201, {"done": True})

    endpoint = Endpoint("POST", "/v1/slow", slow, "sessions:write", "Slow", status=201, idempotent=True)
    app = create_app(state=state)
    app.router.routes.append(Route(endpoint.path, PublicEndpoint(endpoint, state), methods=[endpoint.method]))
    client = make_client(app, make_key(), headers={"Idempotency-Key": "same"})

    first = asyncio.create_task(client.post("/v1/slow", json={"a": 1}))
    await asyncio.wait_for(entered.wait(), 5)
    second = await client.post("/v1/slow", json={"a": 1})
    error = expect_error(second, 409, "idempotency_conflict")
    assert second.headers["retry-after"] == "1"
    assert error["retry_after"] == 1
    assert "Retry" in error["message"]

    gate.set()
    assert (await first).status_code == 201
    third = await client.post("/v1/slow", json={"a": 1})
    assert (third.status_code, third.json(), third.headers["idempotent-replayed"]) == (201, {"done": True}, "true")


# --- 422 --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param", "advice"),
    [
        ({}, "mode", "bidirectional_translation"),
        ({"source_language": "de"}, "mode", "one of"),
        ({"mode": "ai_agent"}, "ai_agent", "system_prompt"),
        ({"mode": "ai_agent", "ai_agent": {"tools": [{"description": "no name"}]}}, "ai_agent.tools[0].name", ""),
    ],
)
async def test_a_missing_required_field(client, body, param, advice):
    error = expect_error(await client.post("/v1/sessions", json=body), 422, "missing_required_field", param)
    assert f"`{param}` is required" in error["message"]
    assert advice in error["message"]


async def test_provider_is_rejected_with_advice_to_use_routing(client):
    response = await client.post("/v1/sessions", json={**BASIC, "provider": "twilio"})
    error = expect_error(response, 422, "invalid_field_value", "provider")
    assert "`routing`" in error["message"]


@pytest.mark.parametrize(
    ("patch", "param", "advice"),
    [
        ({"recording": {"enabled": "yes"}}, "recording.enabled", "expected `bool`"),
        ({"recording": True}, "recording", "expected `object"),
        ({"metadata": ["a"]}, "metadata", "at most 50 string keys"),
        ({"mode": "ai_agent", "ai_agent": {"voice": "robot"}}, "ai_agent.voice", "alloy, echo, fable"),
        ({"mode": "ai_agent", "ai_agent": {"temperature": 2.5}}, "ai_agent.temperature", "from 0 to 2"),
        ({"mode": "ai_agent", "ai_agent": {"temperature": -0.1}}, "ai_agent.temperature", "from 0 to 2"),
        ({"mode": "ai_agent", "ai_agent": {"knowledge_base_id": "orders"}}, "ai_agent.knowledge_base_id", "kb_"),
        ({"mode": "ai_agent", "ai_agent": {"tools": {"name": "x"}}}, "ai_agent.tools", "expected `array"),
        ({"mode": "ai_agent", "ai_agent": {"tools": [{"name": "a b"}]}}, "ai_agent.tools[0].name", "regex"),
        (
            {"mode": "ai_agent", "ai_agent": {"tools": [{"name": "t", "parameters": "{}"}]}},
            "ai_agent.tools[0].parameters",
            "expected `object`",
        ),
        ({"agent_id": "agent-7"}, "agent_id", "agt_"),
        ({"overrides": {"voice": "nova"}}, "overrides", "needs `agent_id`"),
        ({"overrides": {"voice": "gravel"}}, "overrides.voice", "alloy, echo"),
    ],
)
async def test_an_invalid_field_value(client, patch, param, advice):
    response = await client.post("/v1/sessions", json={**BASIC, **patch})
    error = expect_error(response, 422, "invalid_field_value", param)
    assert f"`{param}`" in error["message"]
    assert advice in error["message"]


@pytest.mark.parametrize(
    ("audio", "param", "value"),
    [
        ({"encoding": "pcm16"}, "audio.encoding", "'pcm16'"),
        ({"encoding": "MULAW"}, "audio.encoding", "'MULAW'"),
        ({"sample_rate_hz": 16000}, "audio.sample_rate_hz", "16000"),
        ({"sample_rate_hz": "8000"}, "audio.sample_rate_hz", "got `str`"),
        ({"channels": 2}, "audio.channels", "2"),
        ({"channels": 0}, "audio.channels", "0"),
        ({"encoding": "mulaw", "sample_rate_hz": 8000, "channels": 2}, "audio.channels", "2"),
    ],
)
async def test_the_audio_transport_hints_allow_only_what_the_stream_carries(client, state, audio, param, value):
    """(r2) `audio`: encoding mulaw, sample_rate_hz 8000, channels 1; anything else names the field."""
    response = await client.post("/v1/sessions", json={**BASIC, "audio": audio})
    error = expect_error(response, 422, "invalid_field_value", param)
    assert f"`{param}`" in error["message"] and value in error["message"]
    assert "8 kHz mono mu-law" in error["message"]
    assert state.sessions.count() == 0


async def test_the_audio_hints_must_be_an_object(client):
    error = expect_error(await client.post("/v1/sessions", json={**BASIC, "audio": "mulaw"}), 422,
                         "invalid_field_value", "audio")  # fmt: skip
    assert "expected `object" in error["message"]


@pytest.mark.parametrize(
    ("metadata", "param", "advice"),
    [
        ({f"k{i}": "v" for i in range(51)}, "metadata", "length <= 50"),
        ({"k" * 41: "v"}, "metadata", "length <= 40"),
        ({"": "v"}, "metadata", "length >= 1"),
        ({"order": "v" * 501}, "metadata.order", "length <= 500"),
        ({"fine": "ok", "count": 3}, "metadata.count", "expected `str`, got `int`"),
        ({"nested": {"a": "b"}}, "metadata.nested", "expected `str`"),
    ],
)
async def test_metadata_limits(client, metadata, param, advice):
    error = expect_error(await client.post("/v1/sessions", json={**BASIC, "metadata": metadata}), 422,
                         "invalid_field_value", param)  # fmt: skip
    assert advice in error["message"]
    assert "at most 50 string keys (1-40 characters)" in error["message"]


async def test_a_bad_metadata_key_is_named_in_the_message(client):
    key = "k" * 41
    response = await client.post("/v1/sessions", json={**BASIC, "metadata": {"ok": "1", key: "v"}})
    error = expect_error(response, 422, "invalid_field_value", "metadata")
    assert repr(key) in error["message"]


async def test_strict_mode_rejects_unknown_fields(make_app, make_client, make_key):
    client = make_client(make_app(strict=True), make_key())
    error = expect_error(await client.post("/v1/sessions", json={**BASIC, "colour": "red"}), 422,
                         "invalid_field_value", "colour")  # fmt: skip
    assert "remove it" in error["message"]
    response = await client.post("/v1/sessions", json={**BASIC, "routing": {"phone_number": "+4930123", "ext": 1}})
    expect_error(response, 422, "invalid_field_value", "routing.ext")
    response = await client.post("/v1/sessions/sess_x/end", json={"reason": "done"})
    expect_error(response, 422, "invalid_field_value", "reason")
    assert (await client.post("/v1/sessions", json=BASIC)).status_code == 201


async def test_lenient_mode_ignores_unknown_fields_with_a_warning(client):
    response = await client.post(
        "/v1/sessions", json={**BASIC, "colour": "red", "routing": {"type": "sip", "trunk": "a"}}
    )
    assert response.status_code == 201
    warning = response.headers["x-mockglot-warning"]
    assert "colour" in warning
    assert "routing.trunk" in warning
    assert "colour" not in response.json()
    plain = await client.post("/v1/sessions", json=BASIC)
    assert "x-mockglot-warning" not in plain.headers


@pytest.mark.parametrize("name", ["ключ", "emoji😀", "line\nbreak", "tab\there", "bell\x07"])
async def test_any_unknown_field_name_gives_a_readable_warning(client, name):
    """Regression: a field name outside latin-1 in the warning header crashed the response with a 500."""
    response = await client.post("/v1/sessions", json={**BASIC, name: 1})
    assert response.status_code == 201
    warning = response.headers["x-mockglot-warning"]
    assert warning.isprintable()
    assert name.encode("unicode_escape").decode("ascii") in warning


async def test_the_warning_lists_at_most_ten_fields(client):
    body = {**BASIC, **{f"extra{i:02d}": i for i in range(25)}}
    response = await client.post("/v1/sessions", json=body)
    assert response.status_code == 201
    warning = response.headers["x-mockglot-warning"]
    assert "extra09" in warning
    assert "extra10" not in warning
    assert "and 15 more" in warning


async def test_a_long_unknown_field_name_is_shortened_in_the_warning(server_client):
    """A 200 000-character field name once made a 200 kB header that clients refuse to read (httpx, Node: 16 kB)."""
    long_names = {f"{letter}" * 200_000: 1 for letter in "ab"}
    routing = {"type": "sip", "c" * 5000: 1}
    response = await server_client.post("/v1/sessions", json={**BASIC, **long_names, "routing": routing})
    assert response.status_code == 201
    warning = response.headers["x-mockglot-warning"]
    assert len(warning) < 1000
    assert "a" * 39 in warning and "routing.ccc" in warning


@pytest.mark.parametrize("mode", ["translation", "AI_AGENT", "", 3, None, ["ai_agent"]])
async def test_an_invalid_mode(client, mode):
    error = expect_error(await client.post("/v1/sessions", json={"mode": mode}), 422, "invalid_mode", "mode")
    assert "bidirectional_translation, assistive_translation, ai_agent, help_chat_voice" in error["message"]


@pytest.mark.parametrize("field", ["source_language", "target_language"])
@pytest.mark.parametrize("code", ["xx", "DE", "deu", "de-DE", "", 7])
async def test_an_invalid_language_code(client, field, code):
    response = await client.post("/v1/sessions", json={**BASIC, field: code})
    error = expect_error(response, 422, "invalid_language_code", field)
    assert "ISO-639-1" in error["message"]
    assert "ar bg cs" in error["message"]


@pytest.mark.parametrize(
    ("routing", "param", "advice"),
    [
        ({}, "routing", "got none"),
        ({"direction": "inbound"}, "routing", "got none"),
        ({"phone_number": "+4930123456", "connection_id": "pcon_a1"}, "routing", "got phone_number, connection_id"),
        ({"phone_number": "+4930123456", "type": "sip"}, "routing", "got phone_number, sip"),
        ({"phone_number": "030123456"}, "routing.phone_number", "E.164"),
        ({"phone_number": "+0123456"}, "routing.phone_number", "E.164"),
        ({"phone_number": "+1234567890123456"}, "routing.phone_number", "E.164"),
        ({"phone_number": 4930123456}, "routing.phone_number", "E.164"),
        ({"connection_id": "conn_1"}, "routing.connection_id", "pcon_"),
        ({"type": "pstn"}, "routing.type", '"sip"'),
        ({"sip": {"from_uri": "sip:a@b"}}, "routing.sip", '"type": "sip"'),
        ({"phone_number": "+4930123456", "sip": {}}, "routing.sip", '"type": "sip"'),
        ({"type": "sip", "sip": {"from_uri": "alice@example.com"}}, "routing.sip.from_uri", "SIP URI"),
        ({"type": "sip", "sip": {"headers": {"Customer": "1"}}}, "routing.sip.headers", "X- headers"),
        ({"type": "sip", "sip": {"headers": {"X-Id": 1}}}, "routing.sip.headers.X-Id", "X- headers"),
        ({"type": "sip", "direction": "sideways"}, "routing.direction", '"inbound" or "outbound"'),
        ("+4930123456", "routing", "expected `object"),
    ],
)
async def test_invalid_routing(client, routing, param, advice):
    response = await client.post("/v1/sessions", json={**BASIC, "routing": routing})
    error = expect_error(response, 422, "invalid_routing", param)
    assert advice in error["message"]


async def test_an_unknown_agent_id(client):
    response = await client.post("/v1/sessions", json={"mode": "ai_agent", "agent_id": "agt_01HXMISSING"})
    error = expect_error(response, 422, "ai_agent_not_found", "agent_id")
    assert "agt_01HXMISSING" in error["message"]
    assert "POST /v1/agents" in error["message"]


async def test_a_rejected_create_costs_nothing_and_creates_nothing(client, state):
    for body in ({}, {"mode": "nope"}, {**BASIC, "provider": "x"}, {**BASIC, "routing": {}}, {"mode": "ai_agent"}):
        assert (await client.post("/v1/sessions", json=body)).status_code == 422
    response = await client.post("/v1/sessions", json=BASIC)
    assert response.headers["x-api-credits-used"] == "1"
    assert len(state.sessions.all()) == 1


# --- 500 --------------------------------------------------------------------------------------------------


# The edge's two passes: a request no fault or `Prefer` concerns goes straight to its endpoint, one with a `Prefer`
# (here one that asks for nothing) through the instrumented pass. A bug looks the same on both.
BOTH_PASSES = pytest.mark.parametrize("headers", [{}, {"Prefer": "respond-async"}], ids=["direct", "instrumented"])


@BOTH_PASSES
async def test_a_bug_is_a_500_envelope_with_its_request_id(app, client, make_client, monkeypatch, headers):
    """No input should get here (test_fuzz_rest.py); when a bug does, the client still gets the envelope."""

    def broken(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(render, "session", broken)
    response = await client.post("/v1/sessions", json=BASIC, headers=headers)
    error = expect_error(response, 500, "internal_error")
    assert "bug" in error["message"]
    assert "secret internals" not in error["message"]  # internals stay in the log
    journal = (await make_client(app).get("/_mockglot/requests")).json()["data"]
    assert [entry["status"] for entry in journal] == [500]


@BOTH_PASSES
async def test_a_bug_outside_the_handlers_is_the_same_envelope(client, state, monkeypatch, headers):
    def broken(entry):
        raise RuntimeError("journal broke")

    monkeypatch.setattr(state.requests, "append", broken)
    response = await client.get("/v1/sessions/sess_missing", headers=headers)
    error = expect_error(response, 500, "internal_error")
    assert error["request_id"] == response.headers["x-request-id"]


@BOTH_PASSES
async def test_a_request_only_another_worker_runs_is_left_to_it(app, client, make_client, monkeypatch, caplog, headers):
    """A handler that finds the session held by another worker (`Elsewhere`) is no bug: the request goes on to the
    shared-state middleware, which forwards it, and is journaled where it runs; here, no 500 and no log line."""

    def elsewhere(*args, **kwargs):
        raise Elsewhere("wrk_b")

    monkeypatch.setattr(render, "session", elsewhere)
    with pytest.raises(Elsewhere):
        await client.post("/v1/sessions", json=BASIC, headers=headers)
    assert (await make_client(app).get("/_mockglot/requests")).json()["data"] == []
    assert not [record for record in caplog.records if "internal error" in record.getMessage()]


# --- 429 --------------------------------------------------------------------------------------------------


async def test_over_the_rate_limit(make_app, make_client, make_key):
    app = make_app(rate_limit=2)
    state = app.state.mockglot
    state.clock.set(1_800_000_010)  # 10 s into a one-minute window
    key = make_key()
    client = make_client(app, key)
    first = await client.post("/v1/sessions", json=BASIC)
    assert first.headers["x-ratelimit-limit"] == "2"
    assert first.headers["x-ratelimit-remaining"] == "1"
    assert first.headers["x-ratelimit-reset"] == "1800000060"
    assert (await client.get(f"/v1/sessions/{first.json()['id']}")).headers["x-ratelimit-remaining"] == "0"

    limited = await client.get(f"/v1/sessions/{first.json()['id']}")
    error = expect_error(limited, 429, "rate_limit_exceeded")
    assert limited.headers["retry-after"] == str(error["retry_after"])
    assert 49 <= error["retry_after"] <= 50
    assert "2 requests a minute" in error["message"]
    assert limited.headers["x-ratelimit-remaining"] == "0"

    other = make_client(app, make_key())
    assert (await other.post("/v1/sessions", json=BASIC)).status_code == 201

    state.clock.advance(error["retry_after"])
    assert (await client.get(f"/v1/sessions/{first.json()['id']}")).status_code == 200


async def test_a_per_key_rate_limit_from_the_keys_file(make_app, make_client):
    app = make_app(keys=[{"key": "sk_test_slowkey1234", "organization": "org_a", "rate_limit": 1}])
    client = make_client(app, "sk_test_slowkey1234")
    assert (await client.post("/v1/sessions", json=BASIC)).status_code == 201
    limited = await client.post("/v1/sessions", json=BASIC)
    expect_error(limited, 429, "rate_limit_exceeded")
    assert int(limited.headers["retry-after"]) >= 1
    assert len(app.state.mockglot.sessions.all()) == 1


async def test_without_a_limit_the_headers_report_the_nominal_one(client):
    response = await client.post("/v1/sessions", json=BASIC)
    assert int(response.headers["x-ratelimit-limit"]) > 0
    assert int(response.headers["x-ratelimit-remaining"]) == int(response.headers["x-ratelimit-limit"]) - 1
