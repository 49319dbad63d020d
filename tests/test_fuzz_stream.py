"""Hypothesis-generated bad frames: each gets a session.error, none closes the stream or breaks the server; on
its own and as a worker sharing state through a real Redis."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from mockglot.api.stream import MAX_FRAME_BYTES
from mockglot.settings import Settings
from mockglot.testing.server import ServerThread
from mockglot.transport import WS_MAX_BYTES

KEY = "sk_test_fuzzstream01"
VALID_TYPES = ("audio.input", "ping", "session.end")  # a tuple: a generated `type` may be a list

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def _valid_audio() -> dict:
    return {
        "type": "audio.input",
        "sequence": 10**9,
        "timestamp_ms": 0,
        "speaker": "customer",
        "audio": {"encoding": "mulaw", "sample_rate_hz": 8000, "payload": base64.b64encode(b"\xff" * 160).decode()},
    }


def _not_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return True
    return False


# Each strategy yields frames that are invalid by construction.
non_json = st.text(min_size=1, max_size=200).filter(_not_json)
non_objects = json_values.filter(lambda v: not isinstance(v, dict)).map(json.dumps)
unknown_types = (
    st.dictionaries(st.text(max_size=10), json_values, max_size=5)
    .map(lambda d: {**d, "type": d.get("type")})
    .filter(lambda d: d["type"] not in VALID_TYPES)
    .map(json.dumps)
)
AUDIO_FIELDS = ["sequence", "speaker", "audio", "audio.encoding", "audio.sample_rate_hz", "audio.payload"]


@st.composite
def broken_audio(draw: st.DrawFn) -> str:
    frame = _valid_audio()
    field = draw(st.sampled_from(AUDIO_FIELDS))
    bad = {
        "sequence": st.one_of(
            st.text(max_size=5),
            st.floats(allow_nan=False).filter(lambda f: not f.is_integer()),  # 1.0 is a sequence (r2)
            st.none(),
            st.lists(st.integers(), max_size=2),
        ),
        "speaker": st.text(max_size=10).filter(lambda s: s not in ("customer", "agent")),
        "audio": st.one_of(st.none(), st.integers(), st.text(max_size=10), st.just({})),
        "audio.encoding": st.text(max_size=10).filter(lambda s: s != "mulaw"),
        "audio.sample_rate_hz": st.integers().filter(lambda n: n != 8000),
        "audio.payload": st.one_of(
            st.just(""),
            st.text(alphabet="!@#$%^&*()", min_size=1, max_size=30),
            st.binary(min_size=65 * 1024, max_size=70 * 1024).map(lambda b: base64.b64encode(b).decode()),
        ),
    }[field]
    value = draw(bad)
    if "." in field:
        frame["audio"][field.split(".")[1]] = value
    elif draw(st.booleans()) or field == "audio":
        frame[field] = value
    else:
        del frame[field]
    return json.dumps(frame)


deeply_nested = st.builds(  # up to 5,000 deep; a ping whose extra field nests is left unclosed (else it is valid)
    lambda depth, opener, closed: opener * depth + ("]" * depth if closed and opener == "[" else ""),
    st.integers(1, 5000),
    st.sampled_from(["[", '{"type": "ping", "x": ', '{"a": ']),
    st.booleans(),
)
oversized = st.builds(  # past the stream's own 256 KiB limit, under the transport's 1 MiB
    lambda size, fill: '{"type": "ping", "pad": "' + fill * size + '"}',
    st.integers(MAX_FRAME_BYTES + 1, WS_MAX_BYTES - 100),
    st.sampled_from(["x", "é"]),
).filter(lambda text: len(text.encode()) < WS_MAX_BYTES)
bad_frames = st.one_of(
    non_json, non_objects, unknown_types, broken_audio(), st.binary(min_size=1, max_size=100), deeply_nested, oversized
)


@pytest.fixture(scope="module", params=["memory", "redis"])
def live(request) -> Iterator[ServerThread]:
    """A server of this module's own, in memory or as a worker on Redis, audio.output sent at once."""
    state = request.getfixturevalue("redis_server").url if request.param == "redis" else "memory"
    with ServerThread(Settings(port=0, output_pace="instant", state=state)) as running:
        yield running


@pytest.fixture(scope="module")
def stream(live):
    session = httpx.post(
        f"{live.base_url}/v1/sessions", json={"mode": "bidirectional_translation"}, headers={"X-API-Key": KEY}
    ).json()
    with connect(f"{session['stream']['url']}?token={session['stream']['token']}", max_size=None) as ws:
        assert msgspec.json.decode(ws.recv(5))["type"] == "session.ready"
        yield ws


def exchange(ws, frames: list[str | bytes]) -> list[dict]:
    """Send the frames, then a ping; return everything that came back before the pong."""
    for frame in frames:
        ws.send(frame)
    ws.send('{"type": "ping"}')
    replies = []
    while (reply := msgspec.json.decode(ws.recv(10)))["type"] != "pong":
        replies.append(reply)
    return replies


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frame=bad_frames)
def test_every_bad_frame_gets_a_session_error_and_the_stream_goes_on(stream, frame):
    replies = exchange(stream, [frame])
    assert [r["type"] for r in replies] == ["session.error"]
    error = replies[0]["error"]
    assert error["code"] in {"invalid_message", "invalid_audio_format", "invalid_speaker"}
    assert error["message"]


def test_a_flood_of_bad_frames_gets_one_error_each(stream):
    replies = exchange(stream, ["nope"] * 300 + [b"\x00"] * 50)
    assert len(replies) == 350 and {r["error"]["code"] for r in replies} == {"invalid_message"}


def test_the_server_still_serves_other_sessions(live, stream):
    exchange(stream, ["x"] * 50)
    created = httpx.post(
        f"{live.base_url}/v1/sessions", json={"mode": "ai_agent", "ai_agent": {}}, headers={"X-API-Key": KEY}
    )
    assert created.status_code == 201
    session = created.json()
    with connect(f"{session['stream']['url']}?token={session['stream']['token']}") as ws:
        assert msgspec.json.decode(ws.recv(5))["type"] == "session.ready"
