"""Frames that used to crash the stream: deep nesting, invalid UTF-8, oversized messages.

Each gets a `session.error` (invalid_message) and the stream goes on, with nothing in the server's log; past the
transport's limit (1 MiB) the socket closes 1009, still without a traceback."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import ClientConnection, connect

from mockglot.api.stream import MAX_FRAME_BYTES
from mockglot.settings import Settings
from mockglot.testing.server import ServerThread
from mockglot.transport import WS_MAX_BYTES

KEY = "sk_test_streamlimits1"


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def server_log() -> Iterator[Collect]:
    """Warnings, errors and tracebacks that the server logs while this module runs."""
    handler = Collect()
    loggers = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.error", "mockglot")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)


@pytest.fixture(scope="module")
def server(server_log):
    with ServerThread(Settings(port=0, output_pace="instant")) as running:
        yield running


def open_stream(server: ServerThread) -> tuple[str, ClientConnection]:
    session = httpx.post(
        f"{server.base_url}/v1/sessions", json={"mode": "bidirectional_translation"}, headers={"X-API-Key": KEY}
    ).json()
    ws = connect(f"{session['stream']['url']}?token={session['stream']['token']}", max_size=None, legacy=True)
    assert msgspec.json.decode(ws.recv(5))["type"] == "session.ready"
    return session["id"], ws


@pytest.fixture
def stream(server) -> Iterator[tuple[str, ClientConnection]]:
    session_id, ws = open_stream(server)
    with ws:
        yield session_id, ws


def send_invalid_utf8(ws: ClientConnection, data: bytes) -> None:
    """A text frame whose payload is not UTF-8 (the client library refuses to build one from a str)."""
    with ws.protocol_mutex:
        ws.protocol.send_text(data)
        ws.send_data()


def answer_then_pong(ws: ClientConnection) -> list[dict]:
    ws.send('{"type": "ping"}')
    replies = []
    while (reply := msgspec.json.decode(ws.recv(10)))["type"] != "pong":
        replies.append(reply)
    return replies


def assert_one_invalid_message(replies: list[dict], says: str) -> None:
    assert [r["type"] for r in replies] == ["session.error"]
    assert replies[0]["error"]["code"] == "invalid_message"
    assert says in replies[0]["error"]["message"]


def tracebacks(server_log: Collect) -> list[str]:
    return [r.getMessage() for r in server_log.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    "frame",
    [
        "[" * 1000 + "]" * 1000,
        '{"type": "ping", "x": ' + "[" * 1000 + "]" * 1000 + "}",
        '{"type": "audio.input", "audio": ' + '{"a":' * 1000 + "1" + "}" * 1000 + "}",
        "[" * 100_000,
    ],
    ids=["array", "ping-extra", "audio-object", "unclosed"],
)
def test_a_frame_nested_1000_deep_is_invalid_message_and_the_stream_goes_on(stream, server_log, frame):
    _, ws = stream
    ws.send(frame)
    assert_one_invalid_message(answer_then_pong(ws), "nests JSON deeper")
    assert tracebacks(server_log) == []


def test_invalid_utf8_is_invalid_message_and_the_stream_goes_on(server, stream, server_log):
    session_id, ws = stream
    send_invalid_utf8(ws, b'{"type": "ping", "x": "\xff\xfe"}')
    assert_one_invalid_message(answer_then_pong(ws), "must be UTF-8")
    journal = httpx.get(f"{server.base_url}/_mockglot/sessions/{session_id}/frames?direction=in").json()["frames"]
    assert journal[-2]["type"] == "(invalid)" and "not UTF-8" in journal[-2]["frame"]
    assert tracebacks(server_log) == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=1, max_size=64).filter(lambda b: not _is_utf8(b)))
def test_any_invalid_utf8_text_frame_gets_a_session_error(stream, data):
    _, ws = stream
    send_invalid_utf8(ws, data)
    assert_one_invalid_message(answer_then_pong(ws), "must be UTF-8")


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def test_a_frame_over_our_limit_but_under_the_transports_is_refused_unread(server, stream, server_log):
    session_id, ws = stream
    ws.send('{"type": "ping", "x": "' + "x" * MAX_FRAME_BYTES + '"}')
    assert_one_invalid_message(answer_then_pong(ws), f"larger than {MAX_FRAME_BYTES // 1024} KiB")
    journal = httpx.get(f"{server.base_url}/_mockglot/sessions/{session_id}/frames?direction=in").json()["frames"]
    assert journal[-2]["type"] == "(invalid)" and len(journal[-2]["frame"]) < 100  # not kept whole
    assert tracebacks(server_log) == []


def test_a_frame_over_the_transport_limit_closes_1009_without_a_traceback(server, server_log):
    _, ws = open_stream(server)
    with ws, pytest.raises(ConnectionClosedError):
        ws.send("x" * (WS_MAX_BYTES + 1))
        ws.recv(10)
    assert ws.close_code == 1009
    assert tracebacks(server_log) == []
    _, other = open_stream(server)  # the server goes on
    with other:
        assert answer_then_pong(other) == []
