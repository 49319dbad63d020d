"""Idempotency keys: a retried POST replays the first successful response instead of acting twice."""

from __future__ import annotations

from dataclasses import dataclass

from mockglot.errors import ApiError
from mockglot.state.auth import Owner

LIFETIME_SECONDS = 24 * 60 * 60
MAX_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    body: bytes


@dataclass(slots=True)
class _Record:
    fingerprint: str
    created_at: float
    response: StoredResponse | None = None  # None while the first request is still running


class IdempotencyStore:
    def __init__(self) -> None:
        self._records: dict[tuple[Owner, str], _Record] = {}  # oldest first
        self._by_org: dict[str, set[tuple[Owner, str]]] = {}  # so one organization's reset costs only its own

    def reset(self, organization: str | None = None) -> None:
        if organization is None:
            self._records.clear()
            self._by_org.clear()
        else:
            for key in self._by_org.pop(organization, ()):
                self._records.pop(key, None)

    def _forget(self, key: tuple[Owner, str]) -> None:
        del self._records[key]
        keys = self._by_org.get(key[0][0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_org[key[0][0]]

    def begin(self, owner: Owner, key: str, fingerprint: str, now: float) -> StoredResponse | None:
        """Claim the key for this request, or return the response to replay.

        Returns None when the caller should run the request (and then `complete` or `abandon` the key).
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
            return record.response
        self._records.pop((owner, key), None)  # an expired record: the new one goes to the end (newest)
        self._records[(owner, key)] = _Record(fingerprint=fingerprint, created_at=now)
        self._by_org.setdefault(owner[0], set()).add((owner, key))
        return None

    def purge(self, now: float) -> None:
        """Forget keys past their lifetime, so a long-running server does not keep every body forever."""
        for key, record in list(self._records.items()):  # oldest first: stop at the first key still alive
            if now - record.created_at < LIFETIME_SECONDS:
                break
            self._forget(key)

    def complete(self, owner: Owner, key: str, response: StoredResponse) -> None:
        record = self._records.get((owner, key))
        if record is not None:
            record.response = response

    def abandon(self, owner: Owner, key: str) -> None:
        """Errors are not cached: the key may be retried."""
        record = self._records.get((owner, key))
        if record is not None and record.response is None:
            self._forget((owner, key))
