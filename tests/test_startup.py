"""Start-up imports what serving needs and nothing more (bench/startup.py measures the time this saves)."""

from __future__ import annotations

import subprocess
import sys

from mockglot.scenarios import BUILTIN_DIR, SUFFIXES, ScenarioLibrary, load_file

PROBE = """
import sys
from mockglot import cli, settings
from mockglot.app import create_app

cli.build_parser(serve_only=True)
create_app(settings.from_env())
print(",".join(sorted(m for m in (
    "httpx", "rich", "vosk", "espeakng_loader", "websockets.asyncio.client", "yaml",
    "mockglot.stream_cli", "mockglot.conformance", "mockglot.proxy.cli", "mockglot.openapi", "mockglot.asyncapi",
) if m in sys.modules)))
"""


def test_serving_loads_no_client_side_yaml_vosk_or_espeak_until_used():
    # A fresh interpreter: this test process has imported all of them already.
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == ""


def test_builtin_scenarios_are_named_after_their_files():
    # The library knows a built-in by its file's name and parses it on first use, so the two must agree.
    for path in BUILTIN_DIR.iterdir():
        if path.suffix.lower() in SUFFIXES:
            assert load_file(path).name == path.stem


def test_a_builtin_is_listed_before_it_is_parsed_and_parsed_once():
    library = ScenarioLibrary()
    assert "order-change" in library.names()
    first = library.get("order-change")
    assert library.get("order-change") is first
    assert [loaded.name for _, loaded in library.all()] == library.names()
