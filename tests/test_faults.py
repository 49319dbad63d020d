"""Faults on demand: a request's Prefer header, REST rules (latency, drop, seeded probability), and every stream
fault action."""

from __future__ import annotations

import httpx
import msgspec
import pytest

from mockglot.settings import Settings
from mockglot.testing.server import ServerThread

BODY = {"mode": "bidirectional_translation"}


@pytest.mark.parametrize(
    ("prefer", "status", "code"),
    [("code=503", 503, "service_unavailable"), ("error=rate_limit_exceeded", 429, "rate_limit_exceeded")],
)
def test_a_prefer_header_asks_for_an_error(mockglot, prefer, status, code):
    response = mockglot.client.http.post("/v1/sessions", json=BODY, headers={"Prefer": prefer})
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["request_id"] == response.headers["x-request-id"]
    assert mockglot.sessions() == []


def test_a_prefer_header_that_names_no_error_is_ignored(mockglot):
    for prefer in ("code=200", "error=no_such_error", "return=minimal"):
        assert mockglot.client.http.post("/v1/sessions", json=BODY, headers={"Prefer": prefer}).status_code == 201


def test_a_requested_405_says_what_the_path_allows_as_a_real_one_does(mockglot):
    session = mockglot.client.http.post("/v1/sessions", json=BODY).json()
    for path, allowed in (("/v1/sessions", "POST"), (f"/v1/sessions/{session['id']}", "GET, HEAD")):
        asked = mockglot.client.http.post(path, json=BODY, headers={"Prefer": "error=method_not_allowed"})
        assert asked.status_code == 405
        assert set(asked.headers["allow"].split(", ")) == set(allowed.split(", "))
    real = mockglot.client.http.delete(f"/v1/sessions/{session['id']}")
    assert real.status_code == 405
    assert set(real.headers["allow"].split(", ")) == {"GET", "HEAD"}


def test_a_dropped_connection(mockglot):
    mockglot.fault(path="/v1/sessions", drop=True)
    with pytest.raises(httpx.TransportError):
        mockglot.client.http.post("/v1/sessions", json=BODY)
    assert mockglot.client.http.post("/v1/sessions", json=BODY).status_code == 201


def test_latency_delays_the_request_and_then_serves_it(mockglot):
    mockglot.fault(path="/v1/sessions", latency_ms=250)
    assert mockglot.client.http.post("/v1/sessions", json=BODY).status_code == 201
    assert mockglot.requests()[-1]["duration_ms"] >= 250


def _fire_pattern(seed: int) -> list[int]:
    with ServerThread(Settings(port=0, seed=seed)) as server:
        headers = {"X-API-Key": "sk_test_probability1"}
        rule = {"path": "/v1/sessions", "status": 503, "times": None, "probability": 0.5}
        assert httpx.post(f"{server.base_url}/_mockglot/faults/rest", json=rule).status_code == 201
        return [httpx.post(f"{server.base_url}/v1/sessions", json=BODY, headers=headers).status_code for _ in range(24)]


def test_a_probability_fires_the_same_way_under_the_same_seed():
    first, again = _fire_pattern(11), _fire_pattern(11)
    assert first == again
    assert set(first) == {201, 503}


async def _stream_with(mockglot, **fault) -> list[str]:
    """Two pings on a stream with the fault armed; every raw frame up to the second pong."""
    mockglot.stream_fault(**fault)
    async with mockglot.async_client() as client:
        stream = await client.open_stream(await client.create_session())
        await stream.until("session.ready")
        await stream.send_json({"type": "ping"})
        await stream.send_json({"type": "ping"})
        raw: list[str] = []
        while sum('"type":"pong"' in text for text in raw) < 2:
            raw.append(await stream.ws.recv())
        await stream.ws.close()
    return raw


async def test_an_error_fault_sends_a_session_error_and_the_stream_goes_on(mockglot):
    raw = await _stream_with(mockglot, action="error", after_frames=1, error_code="service_unavailable")
    assert [msgspec.json.decode(text)["type"] for text in raw] == ["pong", "session.error", "pong"]
    journal = mockglot.frames(mockglot.sessions()[0]["id"], direction="out")
    errors = [f for f in journal if f["type"] == "session.error"]
    assert [e["error"]["code"] for e in errors] == ["service_unavailable"]


async def test_a_malformed_fault_sends_a_frame_that_is_not_json(mockglot):
    raw = await _stream_with(mockglot, action="malformed", after_frames=1)
    assert len(raw) == 3
    with pytest.raises(msgspec.DecodeError):
        msgspec.json.decode(raw[1])
    assert raw[1] in mockglot.frames(mockglot.sessions()[0]["id"], direction="out")  # journaled as sent


async def test_a_stall_fault_holds_the_stream_then_it_goes_on(mockglot):
    await _stream_with(mockglot, action="stall", after_frames=1, stall_ms=400)
    session_id = mockglot.sessions()[0]["id"]
    journal = mockglot.control.get(f"/_mockglot/sessions/{session_id}/frames").json()["frames"]
    pings = [f for f in journal if f["type"] == "ping"]
    pongs = [f for f in journal if f["type"] == "pong"]
    assert len(pings) == len(pongs) == 2  # nothing lost: the second ping was answered after the stall
