"""The HTTP edge facing a network: body limits while reading, clients that leave mid-body, the `Prefer` header,
browsers on other origins against the control plane, and secrets kept out of the request journal."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mockglot.control.instrumentation import prefer_error
from mockglot.errors import CATALOGUE
from mockglot.http import MAX_BODY_BYTES, MAX_HEADER_BYTES, MAX_HEADERS
from tests.checks import BASIC

JSON = {"Content-Type": "application/json"}


def expect_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["type"]) == (code, CATALOGUE[code].type)
    assert error["request_id"] == response.headers["x-request-id"]
    return error


# --- bodies -----------------------------------------------------------------------------------------------


async def test_a_streamed_body_is_refused_once_it_passes_the_limit(client, state):
    """No Content-Length: the server counts while reading and stops at the limit, never buffering the rest."""
    sent = 0

    async def chunks():
        nonlocal sent
        for _ in range(64):  # 64 MiB offered
            sent += 1
            yield b"x" * (1024 * 1024)

    response = await client.post("/v1/sessions", content=chunks(), headers=JSON)
    error = expect_error(response, 413, "request_too_large")
    assert str(MAX_BODY_BYTES) in error["message"]
    assert sent <= 3  # read up to the limit, not to the end
    assert state.sessions.all() == []


async def test_an_announced_body_over_the_limit_is_refused_before_it_is_read(client):
    response = await client.post("/v1/sessions", content=b"{}", headers={**JSON, "Content-Length": str(10**9)})
    expect_error(response, 413, "request_too_large")


async def test_the_control_plane_has_the_same_limit(app, make_client):
    control = make_client(app)
    response = await control.post("/_mockglot/scenarios", content=b"x" * (MAX_BODY_BYTES + 1), headers=JSON)
    expect_error(response, 413, "request_too_large")


@pytest.mark.parametrize("prefer", ["", "Prefer: respond-async\r\n"], ids=["direct", "instrumented"])
def test_a_client_gone_before_its_body_is_complete_changes_nothing(server, api_key, prefer):
    """`POST .../end` whose client left mid-body: the session stays live and the journal says the client left.
    The same on the edge's pass straight to the endpoint and on its instrumented one (a `Prefer` asking nothing)."""
    auth = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=server.base_url, headers=auth) as client:
        session = client.post("/v1/sessions", json=BASIC).json()
        path = f"/v1/sessions/{session['id']}/end"
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            head = (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {api_key}\r\n"
                f"{prefer}Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
            )
            sock.sendall(head.encode() + b'{"reason": ')
        for _ in range(200):  # until the server has seen the socket close (bounded: 10 s)
            journal = client.get("/_mockglot/requests", params={"api_key": api_key}).json()["data"]
            ends = [entry for entry in journal if entry["path"] == path]
            if ends:
                break
            time.sleep(0.05)
        assert [entry["status"] for entry in ends] == [499]
        after = client.get(f"/v1/sessions/{session['id']}").json()
        assert after["status"] == session["status"]
        assert after.get("ended_at") is None
        assert client.post(path).status_code == 200  # and it can still be ended


# --- Prefer -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prefer",
    ["code=²".encode("latin-1"), "code=5٠3".encode(), b"code=1e3", b"code=", b"code=99999999999999999", b"code=\xff"],
)
async def test_a_prefer_code_that_is_not_three_ascii_digits_is_ignored(client, prefer):
    response = await client.post("/v1/sessions", json=BASIC, headers={"Prefer": prefer})
    assert response.status_code == 201, response.text


async def test_a_prefer_code_asks_for_that_error(client):
    expect_error(
        await client.post("/v1/sessions", json=BASIC, headers={"Prefer": "code=503"}), 503, "service_unavailable"
    )


@settings(max_examples=300, deadline=None)
@given(header=st.text())
def test_any_prefer_header_is_an_error_asked_for_or_nothing(header):
    error = prefer_error(header)
    assert error is None or error.status >= 400


# --- the control plane and browsers -----------------------------------------------------------------------


async def test_a_cross_site_text_plain_reset_is_refused(app, client, make_client):
    await client.post("/v1/sessions", json=BASIC)
    page = make_client(app)
    simple = {"Content-Type": "text/plain", "Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    response = await page.post("/_mockglot/reset", content=b'{"all": true}', headers=simple)
    error = expect_error(response, 403, "cross_origin_request")
    assert "Origin" in error["message"]
    no_body = await page.post("/_mockglot/reset", headers={"Origin": "https://evil.example"})
    expect_error(no_body, 403, "cross_origin_request")
    fetch_metadata_only = await page.post("/_mockglot/reset", headers={"Sec-Fetch-Site": "same-site"})
    expect_error(fetch_metadata_only, 403, "cross_origin_request")
    assert len(app.state.mockglot.sessions.all()) == 1  # nothing was reset


async def test_a_control_write_with_a_body_must_say_json(app, make_client):
    control = make_client(app)
    response = await control.post("/_mockglot/reset", content=b"{}", headers={"Content-Type": "text/plain"})
    error = expect_error(response, 400, "invalid_request")
    assert "application/json" in error["message"]


async def test_programs_and_same_origin_pages_drive_the_control_plane(app, make_client):
    control = make_client(app)
    assert (await control.post("/_mockglot/reset")).status_code == 200  # no body, no browser headers
    same_origin = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
    assert (await control.post("/_mockglot/reset", json={}, headers=same_origin)).status_code == 200
    reads = await control.get("/_mockglot/health", headers={"Origin": "https://evil.example"})
    assert reads.status_code == 200  # reads are not writes


# --- missing control resources ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "code", "param"),
    [
        ("DELETE", "/_mockglot/faults/flt_nope", "fault_not_found", "fault_id"),
        ("GET", "/_mockglot/scenarios/nope", "scenario_not_found", "name"),
        ("DELETE", "/_mockglot/webhooks/wh_ep_nope", "webhook_endpoint_not_found", "endpoint_id"),
        ("GET", "/_mockglot/webhooks/deliveries/whd_nope", "delivery_not_found", "delivery_id"),
        ("POST", "/_mockglot/webhooks/deliveries/whd_nope/redeliver", "delivery_not_found", "delivery_id"),
        ("GET", "/_mockglot/sessions/sess_nope", "session_not_found", "session_id"),
    ],
)
async def test_a_missing_control_resource_is_a_404_that_names_it(app, make_client, method, path, code, param):
    """Not `route_not_found`: the route exists, the thing it names does not, and the message says where to look."""
    error = expect_error(await make_client(app).request(method, path), 404, code)
    assert error["param"] == param
    assert "nope" in error["message"]


async def test_a_fault_deleted_twice_is_not_found_the_second_time(app, make_client):
    control = make_client(app)
    armed = (await control.post("/_mockglot/faults/rest", json={"path": "/v1/sessions", "status": 503})).json()
    first = await control.delete(f"/_mockglot/faults/{armed['id']}")
    assert (first.status_code, first.json()) == (200, {"id": armed["id"], "deleted": True})
    expect_error(await control.delete(f"/_mockglot/faults/{armed['id']}"), 404, "fault_not_found")
    assert (await control.get("/_mockglot/nope")).json()["error"]["code"] == "route_not_found"


# --- idempotency through a latency fault ------------------------------------------------------------------


async def test_a_request_held_by_a_latency_fault_is_in_flight_for_its_idempotency_key(app, client, make_client):
    control = make_client(app)
    rule = {"method": "POST", "path": "/v1/sessions", "latency_ms": 2000, "times": 1}
    assert (await control.post("/_mockglot/faults/rest", json=rule)).status_code == 201
    headers = {"Idempotency-Key": "held-by-latency"}
    first = asyncio.create_task(client.post("/v1/sessions", json=BASIC, headers=headers))
    for _ in range(500):  # until the fault has fired (bounded: 5 s)
        if app.state.mockglot.faults.all()[0].fired:
            break
        await asyncio.sleep(0.01)
    duplicate = await client.post("/v1/sessions", json=BASIC, headers=headers)
    error = expect_error(duplicate, 409, "idempotency_conflict")
    assert error["retry_after"] == 1
    created = await first
    assert created.status_code == 201
    replayed = await client.post("/v1/sessions", json=BASIC, headers=headers)
    assert (replayed.json()["id"], replayed.headers["idempotent-replayed"]) == (created.json()["id"], "true")


async def test_a_held_request_across_a_reset_charges_the_new_balance(app, client, make_client, api_key):
    """The reset forgets the key's record and balance while the request waits: the session it then makes is
    charged to the organization as it is after the reset, where the client sees it."""
    control = make_client(app)
    rule = {"method": "POST", "path": "/v1/sessions", "latency_ms": 500, "times": 1}
    assert (await control.post("/_mockglot/faults/rest", json=rule)).status_code == 201
    held = asyncio.create_task(client.post("/v1/sessions", json=BASIC))
    for _ in range(500):  # until the fault has fired (bounded: 5 s)
        if app.state.mockglot.faults.all()[0].fired:
            break
        await asyncio.sleep(0.01)
    assert (await control.post("/_mockglot/reset", json={"api_key": api_key})).status_code == 200
    created = await held
    assert created.status_code == 201
    after = await client.get(f"/v1/sessions/{created.json()['id']}")
    assert after.status_code == 200
    assert after.headers["x-api-credits-used"] == "1"


# --- secrets in the journal -------------------------------------------------------------------------------


async def test_the_journal_redacts_every_credential(app, make_client, api_key):
    secrets = {
        "Authorization": f"Bearer {api_key}",
        "Proxy-Authorization": "Basic cHJveHlzZWNyZXQ6eHl6",
        "Cookie": "session=cookiesecret123456",
        "X-Auth-Token": "authtokensecret123456",
        "X-Webhook-Secret": "whsec_hookysecret123456",
    }
    client = make_client(app, headers=secrets)
    query = {"token": "kst_querysecret123456", "api_key": "sk_test_querykey123456", "page": "2"}
    await client.get("/v1/sessions", params=query)
    await make_client(app, headers={"X-API-Key": "sk_test_headerkey123456"}).get("/v1/sessions")
    journal = (await make_client(app).get("/_mockglot/requests")).json()["data"]
    shown = json.dumps(journal)
    for secret in [api_key, "cHJveHlzZWNyZXQ6eHl6", "cookiesecret123456", "authtokensecret123456", "hookysecret"]:
        assert secret not in shown
    for secret in ["kst_querysecret123456", "sk_test_querykey123456", "sk_test_headerkey123456"]:
        assert secret not in shown
    assert "page=2" in journal[0]["query"]
    assert journal[0]["headers"]["x-auth-token"].startswith("authtoke")  # recognisable, not usable


async def test_the_journal_redacts_a_key_or_token_wherever_the_client_put_it(app, make_client, api_key):
    """A key in the path, or under a name the journal does not know (`API_KEY`), is recognised by its shape."""
    client = make_client(app, api_key)
    await client.get(f"/v1/sessions/{api_key}")
    await client.get("/v1/agents", params={"API_KEY": api_key, "Tok": "kst_test_0123456789abcdef"})
    shown = json.dumps((await make_client(app).get("/_mockglot/requests")).json()["data"])
    assert api_key not in shown and "0123456789abcdef" not in shown
    assert "/v1/sessions/sk_test_<redacted>" in shown


# --- headers ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{"X-Big": "x" * (MAX_HEADER_BYTES + 1)}, {f"X-Many-{n}": "1" for n in range(MAX_HEADERS + 1)}],
    ids=["bytes", "count"],
)
async def test_headers_over_the_limit_are_refused_and_not_journaled(app, client, headers):
    response = await client.get("/v1/sessions", headers=headers)
    error = expect_error(response, 431, "headers_too_large")
    assert "headers" in error["message"]
    assert app.state.mockglot.requests.entries() == []
