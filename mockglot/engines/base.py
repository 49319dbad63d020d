"""The contract every recognition engine keeps.

A session's pipeline owns one `Recognizer` per speaker. It feeds 16-bit PCM at 8 kHz, mono, exactly as
decoded from the client's mu-law, and gets back what the recognizer heard. Offsets are in milliseconds of
that speaker's audio (sample counts, never the wall clock), so the same audio gives the same events at any
sending speed.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Partial:
    text: str


@dataclass(frozen=True, slots=True)
class Final:
    text: str
    confidence: float
    start_ms: int
    end_ms: int
    # A scripted engine knows its translation and may carry pre-rendered output audio (8 kHz mu-law).
    translation: str | None = None
    output_audio: bytes | None = None
    extras: dict[str, object] = field(default_factory=dict)


Recognition = Partial | Final


class Recognizer(Protocol):
    def accept(self, pcm: bytes) -> list[Recognition] | Awaitable[list[Recognition]]:
        """Take the next chunk of this speaker's audio; what it completed, in order: a list when it recognizes
        at the call (the scripted engine; no coroutine per chunk), else an awaitable. A recognizer that decodes
        off the event loop takes the chunk at the call (a later call is behind it) and may return a future still
        pending, so its caller can read on and await it later."""
        ...

    async def flush(self) -> list[Recognition]:
        """End of stream: finish the utterance in progress, if any."""
        ...

    def close(self) -> None:
        """Release resources; called once, after the last accept or flush."""
        ...
