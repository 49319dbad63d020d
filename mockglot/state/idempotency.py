"""Idempotency keys: a retried POST replays the first successful response instead of acting twice."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from mockglot.errors import ApiError
from mockglot.state.auth import Environment, Owner
from mockglot.state.replica import DocTracker, SharedDocs

LIFETIME_SECONDS = 24 * 60 * 60
MAX_KEY_LENGTH = 255
MAX_KEYS = 100_000  # kept at once, and the answers they replay: beyond either, the oldest key is forgotten early
MAX_ANSWER_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    body: bytes


@dataclass(slots=True, eq=False)
class Claim:
    """A key as one request claimed it. That request completes or abandons this claim and no later one: a reset
    or the key's expiry may have let another request claim the key while it ran."""

    key: tuple[Owner, str]
    fingerprint: str
    created_at: float
    response: StoredResponse | None = None  # None while the first request is still running


class IdempotencyStore(SharedDocs):
    def __init__(self) -> None:
        self._records: dict[tuple[Owner, str], Claim] = {}  # oldest first
        self._by_org: dict[str, set[tuple[Owner, str]]] = {}  # so one organization's reset costs only its own
        self._answer_bytes = 0  # of the responses kept for replay
        self.tracker: DocTracker | None = None  # shared between workers: one document per (owner, key)

    # --- shared between workers (see state/replica.py) ---------------------------------------------------

    name = "idempotency"

    def share(self) -> None:
        self.tracker = DocTracker(self._encode)

    def _touch(self, key: tuple[Owner, str]) -> None:
        if self.tracker is not None:
            self.tracker.touch(_doc_id(key))

    def _encode(self, doc: str) -> bytes | None:
        record = self._records.get(_key_of(doc))
        if record is None:
            return None
        response = record.response
        return _ENCODER.encode(
            _RecordDoc(
                record.fingerprint,
                record.created_at,
                None if response is None else response.status,
                None if response is None else response.body,
            )
        )

    def load(self, doc: str, data: bytes | None) -> None:
        if self.tracker is not None:
            self.tracker.loaded(doc, data)
        key = _key_of(doc)
        record = self._records.get(key)
        if data is None:
            if record is not None:
                self._forget(key)
            return
        new = _DECODER.decode(data)
        response = None if new.status is None or new.body is None else StoredResponse(new.status, new.body)
        if record is not None and record.created_at == new.created_at:
            self._answer_bytes += _size(response) - _size(record.response)
            record.fingerprint, record.response = new.fingerprint, response  # the same claim: it keeps its place
            return
        if record is not None:  # a new claim is the newest (`purge` goes oldest first)
            self._answer_bytes -= _size(self._records.pop(key).response)
        self._records[key] = Claim(key, new.fingerprint, new.created_at, response)
        self._answer_bytes += _size(response)
        self._by_org.setdefault(key[0][0], set()).add(key)

    def reset(self, organization: str | None = None) -> None:
        if organization is None:
            if self.tracker is not None:
                self.tracker.touched.update(self.tracker.known())
                self.tracker.touched.update(_doc_id(key) for key in self._records)
            self._records.clear()
            self._by_org.clear()
            self._answer_bytes = 0
        else:
            for key in self._by_org.pop(organization, ()):
                self._touch(key)
                record = self._records.pop(key, None)
                if record is not None:
                    self._answer_bytes -= _size(record.response)

    def _forget(self, key: tuple[Owner, str]) -> None:
        self._touch(key)
        self._answer_bytes -= _size(self._records.pop(key).response)
        keys = self._by_org.get(key[0][0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_org[key[0][0]]

    def begin(self, owner: Owner, key: str, fingerprint: str, now: float) -> Claim:
        """Claim the key for this request, or find the response to replay (the claim's `response`).

        A claim without a response is this request's: it runs, then `complete`s or `abandon`s it.
        """
        if not key or len(key) > MAX_KEY_LENGTH:
            raise ApiError(
                "invalid_request",
                f"An Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters; a UUID is a good choice.",
                param="Idempotency-Key",
            )
        record = self._records.get((owner, key))
        if record is not None and now - record.created_at >= LIFETIME_SECONDS:
            record = None
        if record is not None:
            if record.fingerprint != fingerprint:
                raise ApiError(
                    "idempotency_mismatch",
                    f"The Idempotency-Key {key!r} was first used with a different method, path or body. "
                    "Use a new key for a different request.",
                    param="Idempotency-Key",
                )
            if record.response is None:
                raise ApiError(
                    "idempotency_conflict",
                    f"A request with the Idempotency-Key {key!r} is still being processed. Retry after 1 s.",
                    retry_after=1,
                )
            return record
        if (owner, key) in self._records:  # an expired record: the new one goes to the end (newest)
            self._forget((owner, key))
        self._touch((owner, key))
        claim = self._records[(owner, key)] = Claim((owner, key), fingerprint, now)
        self._by_org.setdefault(owner[0], set()).add((owner, key))
        self._shed()
        return claim

    def purge(self, now: float) -> None:
        """Forget keys past their lifetime, so a long-running server does not keep every body forever."""
        for key, record in list(self._records.items()):  # oldest first: stop at the first key still alive
            if now - record.created_at < LIFETIME_SECONDS:
                break
            self._forget(key)

    def complete(self, claim: Claim, response: StoredResponse) -> None:
        if self._records.get(claim.key) is claim:
            self._touch(claim.key)
            claim.response = response
            self._answer_bytes += _size(response)
            self._shed()

    def _shed(self) -> None:
        """Keep within MAX_KEYS and MAX_ANSWER_BYTES, forgetting the oldest keys first."""
        while self._records and (len(self._records) > MAX_KEYS or self._answer_bytes > MAX_ANSWER_BYTES):
            self._forget(next(iter(self._records)))

    def abandon(self, claim: Claim) -> None:
        """Errors are not cached: the key may be retried."""
        if self._records.get(claim.key) is claim and claim.response is None:
            self._forget(claim.key)


class _RecordDoc(msgspec.Struct, array_like=True):
    """A claimed key as workers share it: the response (status and body) once the first request completed."""

    fingerprint: str
    created_at: float
    status: int | None
    body: bytes | None


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(_RecordDoc)
_ID_DECODER = msgspec.json.Decoder(tuple[str, Environment, str])


def _size(response: StoredResponse | None) -> int:
    return 0 if response is None else len(response.body)


def _doc_id(key: tuple[Owner, str]) -> str:
    """`["org","test","key"]`: JSON, so any character in a key or an organization splits back."""
    (organization, environment), name = key
    return msgspec.json.encode((organization, environment, name)).decode()


def _key_of(doc: str) -> tuple[Owner, str]:
    organization, environment, name = _ID_DECODER.decode(doc)
    return (organization, environment), name
