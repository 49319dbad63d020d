"""Every control-plane number has a documented range (README "Limits") and a 422 outside it (#10): the clock
above all, whose overflow once turned every tenant's POST /v1/sessions into a 500."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mockglot.faults import MAX_FAULTS
from mockglot.state.clock import EARLIEST, LATEST
from mockglot.wire import MAX_COUNT, MAX_CREDITS
from tests.checks import expect_error
from tests.conftest import new_key

BODY = {"mode": "bidirectional_translation", "source_language": "de", "target_language": "en"}


@pytest.mark.parametrize(
    "body",
    [
        {"advance": 1e300},
        {"advance": -1e300},
        {"advance": LATEST},  # within MAX_CLOCK_ADVANCE, but past 2100
        {"set": "9999-12-31T23:59:59Z"},
        {"set": "1969-12-31T00:00:00Z"},
        {"set": 1e20},
        {"set": -1},
        {"set": LATEST + 1},
    ],
)
async def test_a_clock_move_out_of_range_is_a_422_and_changes_nothing(app, make_client, body):
    control, other = make_client(app), make_client(app, new_key())
    before = (await control.get("/_mockglot/clock")).json()["offset_seconds"]
    error = expect_error(await control.post("/_mockglot/clock", json=body), 422, "invalid_field_value")
    assert error["param"] == next(iter(body))
    assert (await control.get("/_mockglot/clock")).json()["offset_seconds"] == before
    created = await other.post("/v1/sessions", json=BODY)
    assert created.status_code == 201, created.text


async def test_the_clock_moves_anywhere_inside_its_range(app, make_client):
    control = make_client(app)
    for body in ({"set": EARLIEST}, {"set": "2099-12-31T23:59:59Z"}, {"set": LATEST}, {"advance": -3600}):
        response = await control.post("/_mockglot/clock", json=body)
        assert response.status_code == 200, (body, response.text)
    assert (await control.get("/_mockglot/clock")).json()["now"] == "2099-12-31T23:00:00Z"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        st.fixed_dictionaries({"advance": st.floats(allow_nan=False, allow_infinity=False) | st.integers()}),
        st.fixed_dictionaries(
            {"set": st.floats(allow_nan=False, allow_infinity=False) | st.integers() | st.text(max_size=40)}
        ),
    )
)
async def test_no_clock_request_is_a_500_or_breaks_session_creation(app, make_client, body):
    control, other = make_client(app), make_client(app, new_key())
    response = await control.post("/_mockglot/clock", json=body)
    assert response.status_code in (200, 422), response.text
    now = (await control.get("/_mockglot/clock")).json()["unix"]
    assert EARLIEST <= now <= LATEST + 60  # set to the very end, the clock then runs on with wall time
    assert (await other.post("/v1/sessions", json=BODY)).status_code == 201
    await control.post("/_mockglot/clock", json={"reset": True})


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/_mockglot/faults/rest", {"status": 503, "times": MAX_COUNT + 1}, "times"),
        ("/_mockglot/faults/rest", {"status": 503, "latency_ms": 600_001}, "latency_ms"),
        ("/_mockglot/faults/rest", {"status": 503, "probability": 1.5}, "probability"),
        ("/_mockglot/faults/stream", {"action": "close", "after_frames": MAX_COUNT + 1}, "after_frames"),
        ("/_mockglot/faults/stream", {"action": "stall", "stall_ms": 600_001}, "stall_ms"),
        ("/_mockglot/faults/stream", {"action": "close", "times": 0}, "times"),
        ("/_mockglot/keys", {"key": "sk_test_ranges0001", "credits": MAX_CREDITS + 1}, "credits"),
        ("/_mockglot/keys", {"key": "sk_test_ranges0001", "rate_limit": MAX_COUNT + 1}, "rate_limit"),
        (
            "/_mockglot/scenarios/next",
            {"api_key": "sk_test_ranges0001", "scenario": "order-change", "sessions": MAX_COUNT + 1},
            "sessions",
        ),
        ("/_mockglot/seed", {"seed": 2**64}, "seed"),
    ],
)
async def test_control_plane_numbers_out_of_range_are_a_422_naming_the_field(app, make_client, path, body, param):
    response = await make_client(app).post(path, json=body)
    assert response.status_code == 422, response.text
    assert param in response.text


async def test_armed_faults_are_bounded(app, make_client, monkeypatch):
    monkeypatch.setattr("mockglot.faults.MAX_FAULTS", 3)
    control = make_client(app)
    for _ in range(3):
        assert (await control.post("/_mockglot/faults/rest", json={"status": 503})).status_code == 201
    error = expect_error(await control.post("/_mockglot/faults/rest", json={"status": 503}), 422, "invalid_field_value")
    assert "3 faults are armed" in error["message"]
    assert MAX_FAULTS == 1000


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"organization": ""}, "organization"),
        ({"api_key": ""}, "api_key"),
        ({"organization": "org_a", "api_key": "sk_test_ranges0001"}, "api_key"),
    ],
)
async def test_a_reset_that_names_no_one_organization_is_a_422_and_resets_nothing(app, make_client, body, param):
    """An empty organization (an unset variable) once answered `"reset": "all"` and reset nobody."""
    tenant = make_client(app, new_key())
    session = (await tenant.post("/v1/sessions", json=BODY)).json()
    error = expect_error(await make_client(app).post("/_mockglot/reset", json=body), 422, "invalid_field_value")
    assert error["param"] == param
    assert (await tenant.get(f"/v1/sessions/{session['id']}")).status_code == 200


async def test_an_out_of_range_clock_says_the_range_in_a_sentence(app, make_client):
    error = (await make_client(app).post("/_mockglot/clock", json={"set": 1e20})).json()["error"]
    assert error["message"].startswith("`set` is out of range: the server clock stays between 2000-01-01T00:00:00Z")


async def test_an_out_of_range_query_number_says_its_range_as_a_person_writes_it(app, make_client):
    tenant = make_client(app, new_key())
    session = (await tenant.post("/v1/sessions", json=BODY)).json()
    response = await make_client(app).get(f"/_mockglot/sessions/{session['id']}/frames?wait_for=2000000")
    error = expect_error(response, 422, "invalid_field_value")
    assert error["param"] == "wait_for"
    assert "between 0 and 1,000,000" in error["message"], error["message"]
