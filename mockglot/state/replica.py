"""What several workers share: each store that must agree across workers is a `Replica` of documents.

With `--state redis://`, every worker keeps the whole state in memory as it does alone, and the state store
(`mockglot/shared/`) is the authority between them: a request runs while its worker holds the state (a lock),
after the worker has loaded what other workers changed, and what the request changed is written back before
the lock is let go. A store takes part by naming its documents: `changes()` says which of its documents changed
since it was last asked (their encoding, or None for one that is gone) and `load()` takes another worker's
version of one. `DocTracker` does the bookkeeping for a store: it remembers which documents were touched and the
hash of each one's last encoding, so an untouched or unchanged document costs nothing to share.

Alone (`--state memory`, the default) no store tracks anything and `LocalCoordinator` is a no-op.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Elsewhere(Exception):
    """Only another worker can do this (it holds the session's stream): the request is run there."""

    def __init__(self, worker: str) -> None:
        super().__init__(worker)
        self.worker = worker


class Replica(Protocol):
    """A store whose documents several workers share."""

    name: str  # the documents' namespace: `sessions`, `keys`, ...
    # Whether its changes may be saved after the response that made them (with the worker's next save, or
    # within moments): what a client would lose with a killed worker is nothing it relies on (a count).
    deferrable: bool

    def changes(self) -> dict[str, bytes | None]:
        """Documents changed since the last call: id -> encoding, or None for one that is gone."""
        ...

    def load(self, doc: str, data: bytes | None) -> None:
        """Another worker's version of a document (None: it is gone); not reported back by `changes()`."""
        ...


class SharedDocs:
    """What every `Replica` store has alike: its tracker (None alone) and what it reports."""

    tracker: DocTracker | None = None
    deferrable = False

    def changes(self) -> dict[str, bytes | None]:
        """Documents changed since the last call: id -> encoding, or None for one that is gone."""
        return self.tracker.changes() if self.tracker is not None else {}


class DocTracker:
    """Touched documents and the hash of each one's last shared encoding, for one store.

    `encode(doc)` gives a document's current encoding, or None when the store no longer holds it.
    """

    def __init__(self, encode: Callable[[str], bytes | None]) -> None:
        self.encode = encode
        self.touched: set[str] = set()
        self._hashes: dict[str, int] = {}

    def touch(self, doc: str) -> None:
        self.touched.add(doc)

    def changes(self) -> dict[str, bytes | None]:
        changed: dict[str, bytes] = {}
        self.stage(changed, "")
        return {doc: data or None for doc, data in changed.items()}

    def stage(self, staged: dict[str, bytes], prefix: str) -> None:
        """`changes()` written into a commit's documents as `<prefix><doc>`, b"" for one that is gone (the same
        walk, without a dict of its own: every request that changes anything takes it)."""
        hashes = self._hashes
        encode = self.encode
        for doc in self.touched:
            data = encode(doc)
            if data is None:
                if hashes.pop(doc, None) is not None:
                    staged[prefix + doc] = b""
                continue
            digest = hash(data)
            if hashes.get(doc) != digest:
                hashes[doc] = digest
                staged[prefix + doc] = data
        self.touched.clear()

    def unsaved(self) -> bool:
        """Whether `changes()` would report anything (without taking it)."""
        for doc in self.touched:
            data = self.encode(doc)
            if (data is None and doc in self._hashes) or (data is not None and self._hashes.get(doc) != hash(data)):
                return True
        return False

    def loaded(self, doc: str, data: bytes | None) -> None:
        """Another worker's version is now this store's: nothing to report until it changes here."""
        self.touched.discard(doc)
        if data is None:
            self._hashes.pop(doc, None)
        else:
            self._hashes[doc] = hash(data)

    def known(self) -> set[str]:
        return set(self._hashes)

    def forget_hashes(self) -> None:
        """Report every touched document as changed next time (an emptied Redis is filled again)."""
        self._hashes.clear()


class Coordinator(Protocol):
    """How a request holds the shared state (the lock and an up-to-date copy) and lets it go."""

    def hold(self) -> contextlib.AbstractAsyncContextManager[object]:
        """Hold the state: other workers' changes loaded on entry, this worker's written on exit."""
        ...

    def hold_unless_busy(self) -> contextlib.AbstractAsyncContextManager[bool]:
        """For background work every worker does (a sweep): hold the state, as `hold`, and say True; or, while
        another worker holds it (and so does that work itself), hold nothing and say False."""
        ...

    async def outside(self, waiting: Awaitable[T]) -> T:
        """Await something long (a delay, a wait for frames) without holding the state meanwhile."""
        ...

    def changed(self) -> None:
        """A live stream changed what this worker shares outside any request: write it back soon."""
        ...

    async def from_others(self, scope: Mapping[str, Any]) -> list[bytes]:
        """This GET's answers (200s) from every other live worker, each from what it alone keeps (its request
        journal): what a control-plane read merges with its own."""
        ...


class LocalCoordinator:
    """One worker, state in memory: nothing to hold or share."""

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        yield

    @contextlib.asynccontextmanager
    async def hold_unless_busy(self) -> AsyncIterator[bool]:
        yield True

    async def outside(self, waiting: Awaitable[T]) -> T:
        return await waiting

    def changed(self) -> None:
        pass

    async def from_others(self, scope: Mapping[str, Any]) -> list[bytes]:
        return []
