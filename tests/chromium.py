"""How the browser tests and `bench/inspector.py` start Debian's headless Chromium (one list, so both agree)."""

from __future__ import annotations

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
