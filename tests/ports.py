"""A free loopback port, for the tests that start a server process or need a port nothing listens on."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port with nothing listening (the OS picks it; it is released before this returns): connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
