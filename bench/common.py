"""What several benches share: stopping a server process, the dated load-average heading, in-process timings,
callgrind's instruction totals (ports: tests.ports)."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
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


def timings(command: list[str], runs: int, units: int) -> str:
    """`runs` runs of `command` (which prints its seconds last), as µs per unit: the best, then all of them."""
    each = []
    for _ in range(runs):
        run = subprocess.run(command, check=True, capture_output=True, text=True)
        each.append(float(run.stdout.split()[-1]) / units * 1e6)
    return f"{min(each):6.1f} µs (best of {runs}; all: {', '.join(f'{v:.1f}' for v in each)})"


def callgrind(name: str, keep: str | None) -> tuple[list[str], str]:
    """The command prefix that runs a program under valgrind's callgrind, and the file its counts go to: in `keep`,
    or a new temporary directory (the file is removed once read, unless kept)."""
    out = os.path.join(keep or tempfile.mkdtemp(prefix="callgrind_"), f"callgrind.{name}")
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"], out


def instructions(out: str, keep: str | None) -> int:
    """The instructions a callgrind file counts in all."""
    with open(out) as file:
        text = file.read()
    if not keep:
        os.remove(out)
    found = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no totals in {out}")
    return int(found.group(1))
