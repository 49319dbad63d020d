"""`mockglot serve` as a real process: what its log shows, how it stops on SIGTERM, how it treats idle sockets."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from mockglot.logs import redact_url
from tests.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk_test_serveprocess01"


class Serve:
    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"

    def stop(self) -> tuple[int, str]:
        """SIGTERM; the exit code and everything the process printed."""
        self.process.send_signal(signal.SIGTERM)
        output, _ = self.process.communicate(timeout=30)
        return self.process.returncode, output


@contextmanager
def serve(*flags: str) -> Iterator[Serve]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "mockglot", "serve", "--port", str(port), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    server = Serve(process, port)
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{server.base_url}/_mockglot/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            raise RuntimeError("mockglot serve did not start")
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)


def create_session(server: Serve) -> dict:
    response = httpx.post(
        f"{server.base_url}/v1/sessions", json={"mode": "bidirectional_translation"}, headers={"X-API-Key": KEY}
    )
    assert response.status_code == 201
    return response.json()


def test_the_access_log_holds_no_stream_token_or_api_key():
    with serve() as server:
        session = create_session(server)
        token = session["stream"]["token"]
        with connect(f"{session['stream']['url']}?token={token}") as ws:
            assert msgspec.json.decode(ws.recv(5))["type"] == "session.ready"
        httpx.get(f"{server.base_url}/_mockglot/sessions?api_key={KEY}")
        httpx.get(f"{server.base_url}/_mockglot/requests?limit=5&api_key={KEY}")
        code, log = server.stop()
    assert code == 0
    assert token not in log and KEY not in log
    assert f"?token={token[: token.index('_', 4) + 1]}<redacted>" in log  # kst_test_<redacted>
    assert "api_key=<redacted>" in log and "limit=5&api_key=<redacted>" in log


def test_a_key_in_a_url_is_redacted_whatever_names_it():
    """The server reads `api%5Fkey` as `api_key`, and a client may put a key where none belongs: by its shape."""
    with serve() as server:
        httpx.get(f"{server.base_url}/_mockglot/requests?api%5Fkey={KEY}")
        httpx.get(f"{server.base_url}/_mockglot/requests?API_KEY={KEY}")
        httpx.get(f"{server.base_url}/v1/sessions/{KEY}", headers={"X-API-Key": KEY})
        code, log = server.stop()
    assert code == 0
    assert KEY not in log
    assert log.count("sk_test_<redacted>") == 3


@given(
    before=st.text(max_size=40),
    kind=st.sampled_from(["sk_test_", "sk_live_", "kst_test_", "kst_live_"]),
    secret=st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=8, max_size=40),
    after=st.text(alphabet=st.characters(blacklist_categories=("L", "N")), max_size=20),
)
@settings(max_examples=300, deadline=None)
def test_no_line_keeps_a_key_or_token_whatever_surrounds_it(before, kind, secret, after):
    """The log filter's shortcut (a line with no `=` and no key prefix is left alone) never lets a secret by."""
    assert f"{kind}{secret}" not in redact_url(f"{before}{kind}{secret}{after}")
    assert f"token={secret}" not in redact_url(f"{before}?token={secret}&x=1")


def test_sigterm_ends_live_streams_with_server_shutdown_and_exits_0():
    with serve("--output-pace", "instant") as server:
        session = create_session(server)
        with connect(f"{session['stream']['url']}?token={session['stream']['token']}") as ws:
            assert msgspec.json.decode(ws.recv(5))["type"] == "session.ready"
            server.process.send_signal(signal.SIGTERM)
            ended = msgspec.json.decode(ws.recv(10))
            with pytest.raises(Exception):  # noqa: B017 - the server closes the socket next
                ws.recv(10)
            close_code = ws.close_code
        code, log = server.process.wait(30), server.process.communicate(timeout=30)[0]
    assert ended == {"type": "session.ended", "session_id": session["id"], "reason": "server_shutdown"}
    assert close_code == 1001
    assert code == 0
    assert "Traceback" not in log


def test_idle_and_half_open_sockets_are_reaped_and_a_quiet_stream_is_not():
    with serve("--max-connections", "40", "--header-timeout", "1") as server:
        session = create_session(server)
        with connect(f"{session['stream']['url']}?token={session['stream']['token']}") as ws:
            assert msgspec.json.decode(ws.recv(5))["type"] == "session.ready"
            idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(60)]
            half_open = socket.create_connection(("127.0.0.1", server.port))
            half_open.sendall(b"GET /_mockglot/health HTTP/1.1\r\nHost: x\r\n")  # the head never ends
            for sock in [*idle, half_open]:
                sock.settimeout(30)
                with contextlib.suppress(ConnectionResetError):
                    assert sock.recv(1024) == b""  # closed by the server: over the limit, or idle too long
                sock.close()
            health = httpx.get(f"{server.base_url}/_mockglot/health").json()
            assert health["max_connections"] == 40
            assert 2 <= health["connections"] < 10  # this request and the stream; every idle socket is gone
            ws.send('{"type": "ping"}')  # the stream sent nothing for longer than the header timeout
            assert msgspec.json.decode(ws.recv(5))["type"] == "pong"
        code, log = server.stop()
    assert code == 0
    assert "connections open, the limit" in log and "Traceback" not in log


def test_sigterm_with_an_inspector_event_stream_open_ends_it_cleanly_and_exits_0():
    with serve() as server, httpx.stream("GET", f"{server.base_url}/_mockglot/events", timeout=30) as events:
        lines = events.iter_lines()
        assert next(lines).startswith("retry:")
        server.process.send_signal(signal.SIGTERM)
        list(lines)  # the stream ends (no error) instead of holding the shutdown up
        code, log = server.process.wait(30), server.process.communicate(timeout=30)[0]
    assert code == 0
    assert "Traceback" not in log and "timeout graceful shutdown exceeded" not in log


def test_every_server_using_the_log_config_redacts_in_either_format():
    """`mockglot proxy` logs with the same config: a real Kallglot token in its access log is redacted too."""
    probe = (
        "import logging.config; from mockglot.logs import uvicorn_log_config\n"
        "for fmt in ('text', 'json'):\n"
        "    logging.config.dictConfig(uvicorn_log_config(fmt))\n"
        "    logging.getLogger('uvicorn.access').info('%s - \"%s %s HTTP/%s\" %d', '127.0.0.1:5', 'GET', "
        "'/v1/sessions/s/connect?token=kst_live_0123456789abcdef&x=1', '1.1', 101)\n"
        "    logging.getLogger('uvicorn.error').info('%s - \"WebSocket %s\" [accepted]', '1.2.3.4:5', "
        "'/_mockglot/requests?limit=5&api_key=sk_live_0123456789abcdef')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    log = done.stderr
    assert "0123456789abcdef" not in log
    assert log.count("token=kst_live_<redacted>&x=1") == 2 and log.count("api_key=<redacted>") == 2
