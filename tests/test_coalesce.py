"""Writes gathered per event-loop turn (`mockglot.coalesce`): nothing lost, nothing reordered, nothing held back
past its turn, and a large body still meets flow control; then the same over a real server's sockets."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx

from mockglot.coalesce import FLUSH_BYTES, CoalescingTransport, TurnFlusher
from tests.checks import BASIC


class Recorder(asyncio.Transport):
    """A transport that keeps what it was asked to do."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[object] = []
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.calls.append(bytes(data))

    def close(self) -> None:
        self.calls.append("close")
        self.closing = True

    def abort(self) -> None:
        self.calls.append("abort")
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0


async def test_a_turns_writes_leave_together_at_the_next_turn_in_order():
    flusher = TurnFlusher()
    first, second = Recorder(), Recorder()
    a, b = CoalescingTransport(first, flusher), CoalescingTransport(second, flusher)
    a.write(b"HTTP/1.1 200 OK\r\n\r\n")
    b.write(b"head-b ")
    a.write(bytearray(b"body-a"))
    b.write(memoryview(b"body-b"))
    assert first.calls == second.calls == []  # still this turn
    assert a.get_write_buffer_size() == len(b"HTTP/1.1 200 OK\r\n\r\nbody-a")
    await asyncio.sleep(0)
    assert first.calls == [b"HTTP/1.1 200 OK\r\n\r\nbody-a"]
    assert second.calls == [b"head-b body-b"]
    a.write(b"next")
    await asyncio.sleep(0)
    assert first.calls[-1] == b"next"


async def test_a_large_write_leaves_at_once_and_close_writes_what_waits_first():
    recorder = Recorder()
    transport = CoalescingTransport(recorder, TurnFlusher())
    transport.write(b"x" * (FLUSH_BYTES - 1))
    assert recorder.calls == []
    transport.write(b"yy")  # past the bound: the real transport (and its flow control) gets it now
    assert recorder.calls == [b"x" * (FLUSH_BYTES - 1) + b"yy"]
    transport.write(b"last words")
    transport.close()
    assert recorder.calls[1:] == [b"last words", "close"]
    await asyncio.sleep(0)  # the turn's flush finds nothing more to write
    assert len(recorder.calls) == 3


async def test_abort_drops_what_waits_and_a_closed_transport_is_not_written():
    aborted, gone = Recorder(), Recorder()
    flusher = TurnFlusher()
    one, other = CoalescingTransport(aborted, flusher), CoalescingTransport(gone, flusher)
    one.write(b"never sent")
    one.abort()
    other.write(b"too late")
    gone.closing = True  # the peer went away this turn
    await asyncio.sleep(0)
    assert aborted.calls == ["abort"]
    assert gone.calls == []


def _read_responses(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    """`count` HTTP/1.1 responses with Content-Length, in the order they arrive."""
    data, responses = b"", []
    while len(responses) < count:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"the server closed after {len(responses)} responses"
            data += chunk
        head, data = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
        while len(data) < length:
            chunk = sock.recv(65536)
            assert chunk, "the server closed mid-body"
            data += chunk
        responses.append((int(lines[0].split()[1]), data[:length]))
        data = data[length:]
    return responses


def test_pipelined_requests_on_one_socket_are_answered_whole_and_in_order(server, api_key):
    """Three requests in one packet (create a session, list agents, an unknown session): three whole responses,
    in order."""
    body = json.dumps(BASIC).encode()
    auth = f"Host: 127.0.0.1\r\nAuthorization: Bearer {api_key}\r\n"
    requests = (
        f"POST /v1/sessions HTTP/1.1\r\n{auth}Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    requests += f"GET /v1/agents HTTP/1.1\r\n{auth}\r\n".encode()
    requests += f"GET /v1/sessions/sess_nope HTTP/1.1\r\n{auth}Connection: close\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(requests)
        (created, made), (listed, agents), (missing, error) = _read_responses(sock, 3)
        assert sock.recv(1) == b""  # `Connection: close`: closed after its whole response, not before
    assert (created, listed, missing) == (201, 200, 404)
    assert json.loads(made)["object"] == "session"
    assert json.loads(agents)["data"] == []
    assert json.loads(error)["error"]["code"] == "session_not_found"


def test_a_body_larger_than_the_bound_arrives_whole(server):
    """The control plane's OpenAPI document is past `FLUSH_BYTES`: it leaves at once, complete."""
    response = httpx.get(f"{server.base_url}/_mockglot/openapi.json", timeout=30)
    assert response.status_code == 200
    assert len(response.content) > FLUSH_BYTES
    assert response.json()["openapi"].startswith("3.")
