"""The one source of randomness: every ID and token comes from here, so a seeded server repeats itself.

Each purpose (session IDs, request IDs, tokens, ...) draws from its own stream derived from the seed, so a
health check or a retried request does not shift the IDs a test cares about.
"""

from __future__ import annotations

import functools
import hashlib
import random
import secrets

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ID_EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: the time part of seeded IDs counts from here


class Randomness:
    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self._streams: dict[str, random.Random] = {}
        self._counters: dict[str, int] = {}

    def reseed(self, seed: int | None) -> None:
        self.seed = seed
        self._streams.clear()
        self._counters.clear()

    def stream(self, purpose: str) -> random.Random:
        rng = self._streams.get(purpose)
        if rng is None:
            if self.seed is None:
                rng = random.Random(secrets.randbits(128))
            else:
                digest = hashlib.sha256(f"{self.seed}:{purpose}".encode()).digest()
                rng = random.Random(int.from_bytes(digest, "big"))
            self._streams[purpose] = rng
        return rng

    def new_id(self, prefix: str, purpose: str, now: float) -> str:
        """`prefix_` and a ULID: `sess_01J...`, `req_01J...`."""
        return prefix + "_" + self.ulid(purpose, int(now * 1000))

    def ulid(self, purpose: str, now_ms: int) -> str:
        """A 26-character ULID-style body: 10 characters of time, 16 of randomness (80 bits: each random byte
        gives one character, five bits' worth, through a table in C rather than shifts in Python).

            Seeded, the time part is a per-purpose counter instead of the clock, so IDs repeat run after run
            and still sort in creation order.
        """
        if self.seed is not None:
            count = self._counters.get(purpose, 0) + 1
            self._counters[purpose] = count
            now_ms = _ID_EPOCH_MS + count
        return _time_text(now_ms) + self.stream(purpose).randbytes(16).translate(_BYTE_TO_CHARACTER).decode()

    def hex(self, purpose: str, nbytes: int) -> str:
        return self.stream(purpose).getrandbits(nbytes * 8).to_bytes(nbytes, "big").hex()

    def random(self, purpose: str) -> float:
        return self.stream(purpose).random()


_BYTE_TO_CHARACTER = bytes(CROCKFORD[byte % 32].encode()[0] for byte in range(256))  # uniform: 256 = 8 * 32


@functools.lru_cache(maxsize=64)  # IDs made in the same millisecond share it
def _time_text(ms: int) -> str:
    """48 bits of milliseconds as 10 Crockford base32 characters (50 bits, the top two zero)."""
    return "".join([CROCKFORD[ms >> shift & 31] for shift in range(45, -1, -5)])
