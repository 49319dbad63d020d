"""The state machine of tests/test_stateful.py, run for longer than the suite can afford.

    python bench/stateful.py                      # 200 examples of up to 40 steps (several minutes)
    python bench/stateful.py --examples 1000 --steps 60

Two tenants create, stream (real WebSockets), end, read and reset sessions on one real server keeping only the
last 3 ended sessions, while the clock moves and bad requests arrive; it fails on any 500, anything logged at
ERROR, a frame not counted exactly once, or a transcript that lost, doubled or reordered a final.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import HealthCheck, settings

from mockglot.settings import Settings
from mockglot.testing.server import ServerThread
from tests.test_stateful import RETAIN, ErrorLog, Sessions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    errors = ErrorLog()
    for name in ("", "uvicorn", "uvicorn.error", "mockglot"):
        logging.getLogger(name).addHandler(errors)
    started = time.perf_counter()
    with ServerThread(Settings(port=0, output_pace="instant", retain_sessions=RETAIN)) as server:
        Sessions.server, Sessions.errors = server, errors
        Sessions.TestCase.settings = settings(
            max_examples=args.examples, stateful_step_count=args.steps, deadline=None,
            suppress_health_check=list(HealthCheck),
        )  # fmt: skip
        Sessions.TestCase().runTest()
    print(f"{args.examples} examples of up to {args.steps} steps passed in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
