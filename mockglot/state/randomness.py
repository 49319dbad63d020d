"""The one source of randomness: every ID and token comes from here, so a seeded server repeats itself.

Each purpose (session IDs, request IDs, tokens, ...) draws from its own stream derived from the seed, so a
health check or a retried request does not shift the IDs a test cares about.

What a tenant owns (session IDs, stream tokens, recording, analysis and agent IDs) is drawn with a `scope`: its
API key (or organization). Seeded, each scope has its own sequence derived from the seed, the scope and a
per-scope counter, so a tenant's IDs repeat run after run whatever other tenants do, and knowing the seed is not
enough to compute another key's session IDs or stream tokens: that takes the key itself.

Shared between workers (`share()`), a seeded server's draws are documents: one per scope (its counters), one per
purpose (its counter and its stream's state), and the seed itself, so two workers sharing a seed never draw the
same ID and together draw what one server would have. Unseeded, IDs are random and nothing but the seed is shared.
"""

from __future__ import annotations

import functools
import hashlib
import random
import secrets

import msgspec

from mockglot.state.replica import DocTracker, SharedDocs

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ID_EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: the time part of seeded IDs counts from here
WORKER_PURPOSES = frozenset({"request"})  # with several workers: drawn by each on its own (see `share`)
DRAWN_AHEAD = 64  # random parts of IDs drawn at once (`Randomness._random_part`)


class Randomness(SharedDocs):
    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self._streams: dict[str, random.Random] = {}
        self._counters: dict[str, int] = {}
        self._scoped: dict[str, dict[str, int]] = {}  # scope -> purpose -> draws so far (seeded only)
        self.tracker: DocTracker | None = None  # shared between workers: `seed`, `scope:S`, `purpose:P`
        self._worker = ""
        self._drawn: dict[str, list[str]] = {}  # purpose -> random parts of IDs drawn ahead (`_random_part`)
        self._unseeded: set[str] = set()  # purposes whose stream was made without a seed (never shared)

    # --- shared between workers (see state/replica.py) ---------------------------------------------------

    name = "randomness"

    def share(self, worker: str = "") -> None:
        """`worker` names this worker: the purposes drawn on every request (request IDs) are its own, so they
        stay unique without a document written per request (and, seeded, are not repeatable across runs)."""
        self.tracker = DocTracker(self._encode)
        self._worker = worker

    def _encode(self, doc: str) -> bytes | None:
        kind, _, name = doc.partition(":")
        if kind == "seed":
            return _ENCODER.encode(self.seed)
        if self.seed is None:  # unseeded draws are random: nothing to agree on
            return None
        if kind == "scope":
            counters = self._scoped.get(name)
            return None if counters is None else _ENCODER.encode(counters)
        if name in WORKER_PURPOSES:
            return None
        count = self._counters.get(name)
        rng = self._streams.get(name)
        if count is None and rng is None:
            return None
        return _ENCODER.encode(_PurposeDoc(count, None if rng is None else rng.getstate()))

    def load(self, doc: str, data: bytes | None) -> None:
        if self.tracker is not None:
            self.tracker.loaded(doc, data)
        kind, _, name = doc.partition(":")
        if kind == "seed":
            self.seed = None if data is None else _SEED_DECODER.decode(data)
            for unseeded in self._unseeded:  # another worker's reseed: this one's draws follow the seed too
                self._streams.pop(unseeded, None)
            self._unseeded.clear()
            self._drawn.clear()
        elif kind == "scope":
            if data is None:
                self._scoped.pop(name, None)
            else:
                self._scoped[name] = _SCOPE_DECODER.decode(data)
        elif name in WORKER_PURPOSES:
            pass  # each worker's own
        elif data is None:
            self._counters.pop(name, None)
            self._streams.pop(name, None)
        else:
            purpose = _PURPOSE_DECODER.decode(data)
            if purpose.count is None:
                self._counters.pop(name, None)
            else:
                self._counters[name] = purpose.count
            if purpose.state is None:
                self._streams.pop(name, None)
            else:
                version, internal, gauss = purpose.state
                rng = self._streams.get(name) or random.Random()
                rng.setstate((version, tuple(internal), gauss))
                self._streams[name] = rng

    def _touch_all(self) -> None:
        """Every document this worker has or shared: a reseed changes or removes them all."""
        if self.tracker is not None:
            touched = self.tracker.touched
            touched.update(self.tracker.known())
            touched.add("seed")
            touched.update("scope:" + scope for scope in self._scoped)
            touched.update("purpose:" + purpose for purpose in (*self._counters, *self._streams))

    def reseed(self, seed: int | None) -> None:
        self._touch_all()
        self.seed = seed
        self._streams.clear()
        self._unseeded.clear()
        self._drawn.clear()
        self._counters.clear()
        self._scoped.clear()

    def forget(self, scopes: set[str]) -> None:
        """Start these scopes' sequences over (their organization was reset: what they named is gone)."""
        for scope in scopes:
            if self.tracker is not None:
                self.tracker.touch("scope:" + scope)
            self._scoped.pop(scope, None)

    def _scoped_bytes(self, scope: str, purpose: str, nbytes: int) -> tuple[int, bytes]:
        """Seeded: the scope's next draw for this purpose, as (its count, `nbytes` bytes from the seed, the scope,
        the purpose and the count). A hash, not a Random per scope: a scope costs a few integers."""
        if self.tracker is not None:
            self.tracker.touch("scope:" + scope)
        counters = self._scoped.get(scope)
        if counters is None:
            counters = self._scoped[scope] = {}
        count = counters.get(purpose, 0) + 1
        counters[purpose] = count
        digest = hashlib.sha256(f"{self.seed}\0{scope}\0{purpose}\0{count}".encode()).digest()
        return count, digest[:nbytes]

    def stream(self, purpose: str) -> random.Random:
        if self.tracker is not None and self.seed is not None and purpose not in WORKER_PURPOSES:
            self.tracker.touch("purpose:" + purpose)  # (alone: this one check on the hot path)
        rng = self._streams.get(purpose)
        if rng is None:
            if self.seed is None:
                rng = random.Random(secrets.randbits(128))
                self._unseeded.add(purpose)
            else:
                local = self.tracker is not None and purpose in WORKER_PURPOSES
                salt = f":{self._worker}" if local else ""
                digest = hashlib.sha256(f"{self.seed}:{purpose}{salt}".encode()).digest()
                rng = random.Random(int.from_bytes(digest, "big"))
            self._streams[purpose] = rng
        return rng

    def new_id(self, prefix: str, purpose: str, now: float, scope: str | None = None) -> str:
        """`prefix_` and a ULID: `sess_01J...`, `req_01J...`."""
        return prefix + "_" + self.ulid(purpose, int(now * 1000), scope)

    def ulid(self, purpose: str, now_ms: int, scope: str | None = None) -> str:
        """A 26-character ULID-style body: 10 characters of time, 16 of randomness (80 bits: each random byte
        gives one character, five bits' worth, through a table in C rather than shifts in Python).

            Seeded, the time part is a per-purpose counter instead of the clock, so IDs repeat run after run
            and still sort in creation order.
        """
        if self.seed is not None:
            if scope is not None:
                count, random_part = self._scoped_bytes(scope, purpose, 16)
                return _time_text(_ID_EPOCH_MS + count) + random_part.translate(_BYTE_TO_CHARACTER).decode()
            count = self._counters.get(purpose, 0) + 1  # (shared: `stream` touches the purpose's document)
            self._counters[purpose] = count
            now_ms = _ID_EPOCH_MS + count
        drawn = self._drawn.get(purpose)
        if drawn:
            return _time_text(now_ms) + drawn.pop()
        return _time_text(now_ms) + self._random_part(purpose)

    def _random_part(self, purpose: str) -> str:
        """The 16 random characters of an ID. Where nobody else sees the purpose's stream (one worker, a purpose
        each worker draws alone: request IDs, or any purpose while unseeded), `DRAWN_AHEAD` at a time: one draw
        of 16 × DRAWN_AHEAD bytes is the same bytes, in the same order, as DRAWN_AHEAD draws of 16 (`randbytes`
        fills from the lowest 32-bit word up), so seeded IDs do not change; it costs an ID a list pop instead of
        five calls."""
        rng = self.stream(purpose)
        if self.tracker is not None and self.seed is not None and purpose not in WORKER_PURPOSES:
            return rng.randbytes(16).translate(_BYTE_TO_CHARACTER).decode()
        text = rng.randbytes(16 * DRAWN_AHEAD).translate(_BYTE_TO_CHARACTER).decode()
        self._drawn[purpose] = [text[at : at + 16] for at in range(16 * (DRAWN_AHEAD - 1), 0, -16)]  # popped last first
        return text[:16]

    def hex(self, purpose: str, nbytes: int, scope: str | None = None) -> str:
        if self.seed is not None and scope is not None and nbytes <= 32:
            return self._scoped_bytes(scope, purpose + ":hex", nbytes)[1].hex()
        return self.stream(purpose).getrandbits(nbytes * 8).to_bytes(nbytes, "big").hex()

    def random(self, purpose: str) -> float:
        return self.stream(purpose).random()


class _PurposeDoc(msgspec.Struct, array_like=True):
    """A purpose's seeded counter (the time part of its IDs) and its stream's `getstate()` (about 3 KB)."""

    count: int | None
    state: tuple[int, list[int], float | None] | None


_ENCODER = msgspec.msgpack.Encoder()
_SEED_DECODER = msgspec.msgpack.Decoder(int | None)
_SCOPE_DECODER = msgspec.msgpack.Decoder(dict[str, int])
_PURPOSE_DECODER = msgspec.msgpack.Decoder(_PurposeDoc)

_BYTE_TO_CHARACTER = bytes(CROCKFORD[byte % 32].encode()[0] for byte in range(256))  # uniform: 256 = 8 * 32


@functools.lru_cache(maxsize=64)  # the same for 17 minutes of IDs (or a million seeded ones)
def _time_high(high: int) -> str:
    return "".join([CROCKFORD[high >> shift & 31] for shift in range(25, -1, -5)])


_PAIRS = tuple(CROCKFORD[n >> 5] + CROCKFORD[n & 31] for n in range(1024))  # 10 bits -> 2 characters


def _time_text(ms: int) -> str:
    """48 bits of milliseconds as 10 Crockford base32 characters (50 bits, the top two zero): the six that change
    every 17 minutes cached, the last four from a table."""
    return _time_high(ms >> 20) + _PAIRS[ms >> 10 & 1023] + _PAIRS[ms & 1023]
