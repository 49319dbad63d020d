"""Where a check comes from; apart from the runner so that building the CLI's parser loads no HTTP client."""

from __future__ import annotations

from typing import Literal

Source = Literal["seed", "documented", "emulator"]
SOURCES: tuple[Source, ...] = ("seed", "documented", "emulator")
