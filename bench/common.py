"""What several benches share: a free port, stopping a server process, the dated heading with the load average."""

from __future__ import annotations

import os
import socket
import subprocess
from datetime import UTC, datetime


def free_port() -> int:
    """A loopback port nothing listens on (the OS picks it; released before this returns)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop(process: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    """SIGTERM, ten seconds to exit, then SIGKILL; always reaped."""
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def heading(script: str) -> str:
    """`# bench/<script>, <date> UTC, load average <1 min> <5 min>`: every result says when and how busy."""
    load = os.getloadavg()
    return f"# bench/{script}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average {load[0]:.2f} {load[1]:.2f}"
