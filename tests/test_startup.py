"""Start-up imports what serving needs and nothing more (bench/startup.py measures the time this saves)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from mockglot import cli, settings
from mockglot.app import create_app

cli.build_parser()
create_app(settings.from_env())
print(",".join(sorted(m for m in ("httpx", "rich", "vosk", "espeakng_loader", "websockets.asyncio.client")
                      if m in sys.modules)))
"""


def test_serving_loads_no_http_client_vosk_or_espeak_until_used():
    # A fresh interpreter: this test process has imported all of them already.
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == ""
