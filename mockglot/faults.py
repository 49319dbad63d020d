"""Faults a test asks for: what goes wrong, when, and how often."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

from mockglot.errors import CATALOGUE


class StreamFault(Struct, kw_only=True, forbid_unknown_fields=True):
    """Break a live stream after a number of client frames or finals.

    `close` closes with `close_code`; `error` sends a `session.error` with `error_code` and goes on; `stall`
    stops answering for `stall_ms`; `malformed` sends a frame that is not JSON.
    """

    action: Literal["close", "error", "stall", "malformed"]
    after_frames: Annotated[int, Meta(ge=0)] | None = None
    after_finals: Annotated[int, Meta(ge=0)] | None = None
    close_code: Annotated[int, Meta(ge=1000, le=4999)] = 1011
    error_code: str = "internal_error"
    message: str | None = None
    stall_ms: Annotated[int, Meta(ge=0, le=600_000)] = 5000
    times: Annotated[int, Meta(ge=1)] = 1
    probability: Annotated[float, Meta(ge=0, le=1)] = 1.0

    def check(self) -> str | None:
        """Why this fault can never fire, or None when it can."""
        if self.after_frames is not None and self.after_finals is not None:
            return "give after_frames or after_finals, not both"
        if self.probability == 0:
            return "probability 0 never fires"
        if self.error_code not in CATALOGUE:
            return f"unknown error_code {self.error_code!r}"
        if self.action == "close" and self.close_code in (1005, 1006, 1015):
            return f"close code {self.close_code} is reserved and cannot be sent"
        return None

    def due(self, frames: int, finals: int) -> bool:
        if self.after_finals is not None:
            return finals >= self.after_finals
        return frames >= (self.after_frames or 0)
