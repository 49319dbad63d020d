"""What several benches share: stopping a server process, the dated load-average heading (ports: tests.ports)."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime


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
