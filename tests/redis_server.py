"""A real `redis-server` (Debian's package) for the tests of the shared state: on a free loopback port, with no
persistence, in a directory of its own; `restart()` stops and starts it on the same port (what a fault test
needs: the workers' URL stays valid while the store goes away and comes back).

Missing redis-server is a failure, not a skip: CI installs it (.ci/run), and a silent skip would hide every
shared-state test.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.ports import free_port

START_SECONDS = 20.0  # how long a start may take before the fixture gives up (a loaded CI machine)


def redis_server_path() -> str:
    found = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/sbin:/usr/bin")
    if found is None:
        pytest.fail(
            "redis-server is not installed; the shared-state tests need a real one: apt-get install redis-server "
            "(.ci/run installs it)",
            pytrace=False,
        )
    return found


def ping(port: int, timeout: float = 1.0) -> bool:
    """Whether a Redis answers PING on 127.0.0.1:port (RESP by hand: no client library in the way)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process at a time, always on `port`; `url` names database 0."""

    def __init__(self, directory: Path) -> None:
        self.executable = redis_server_path()
        self.directory = directory
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def start(self) -> None:
        """Start on a free port (the first time; a port taken meanwhile is retried with another) or on the same
        port as before (after `stop`), and return once it answers PING."""
        attempts = 1 if self.port else 5
        for _ in range(attempts):
            port = self.port or free_port()
            if self._launch(port):
                self.port = port
                return
        raise RuntimeError(f"redis-server did not start on port {port}:\n{self.log[-2000:]}")

    def _launch(self, port: int) -> bool:
        command = [
            self.executable,
            "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no",  # no persistence: a restart starts empty, like a lost Redis
            "--dir", str(self.directory), "--logfile", str(self.directory / "redis.log"),
            "--daemonize", "no", "--databases", "16",
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:  # exited: the port was taken, or a bad option
                self.process = None
                return False
            if ping(port):
                return True
            time.sleep(0.02)
        self.stop()
        return False

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL) and wait until it is gone; the port stays this server's."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def restart(self) -> None:
        """Stop and start again on the same port; it comes back empty (no persistence)."""
        self.stop()
        self.start()

    def flush(self) -> None:
        """Empty every database (a test that needs a clean store calls it first)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"FLUSHALL\r\n")
            assert sock.recv(64).startswith(b"+OK")
