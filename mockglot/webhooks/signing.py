"""Webhook signatures (kallglot-api.md §8): `Kallglot-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]`.

`v1` is the lowercase hex HMAC-SHA256 of `"<t>.<raw body>"`, keyed with the endpoint's signing secret exactly
as it was given (`whsec_...` included). The timestamp is inside the signed text, so a receiver that bounds its
age (the tolerance) cannot be fed an old delivery again. Several `v1` values may appear while a secret is
being rotated: one match is enough.

`verify` is what a receiver calls; it never raises anything but `WebhookSignatureError`, whatever the header.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from typing import Literal

SIGNATURE_HEADER = "Kallglot-Signature"
DEFAULT_TOLERANCE_SECONDS = 300

_HEX_SIGNATURE = re.compile(r"[0-9a-f]{64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # unix seconds; 12 digits reach year 33658 and keep ints small

Reason = Literal["missing", "malformed", "mismatch", "timestamp"]


class WebhookSignatureError(ValueError):
    """The signature does not prove that this body was sent, recently, by the holder of the secret.

    `reason` says why: `missing` (no header), `malformed` (not `t=...,v1=...`), `mismatch` (no `v1` matches
    this body and secret) or `timestamp` (authentic, but older or newer than the tolerance allows).
    """

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason


def _digest(body: bytes, secret: str, timestamp: int) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The `Kallglot-Signature` header value for `body` sent at `timestamp` (unix seconds)."""
    return f"t={timestamp},v1={_digest(body, secret, timestamp)}"


def _parse(header: object) -> tuple[int, list[str]]:
    """(timestamp, every v1 value) from a header; unknown schemes (v0, ...) are ignored, as future ones will be."""
    if header is None or header == "" or header == b"":
        raise WebhookSignatureError("missing", f"No {SIGNATURE_HEADER} header: this request was not signed.")
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    if not isinstance(header, str):
        raise WebhookSignatureError("malformed", f"The {SIGNATURE_HEADER} header must be text.")
    timestamps: list[str] = []
    signatures: list[str] = []
    for item in header.split(","):
        if not item.strip():
            continue
        key, equals, value = item.partition("=")
        if not equals:
            raise WebhookSignatureError("malformed", f"{SIGNATURE_HEADER} must read t=<unix>,v1=<hex>.")
        key, value = key.strip(), value.strip()
        if key == "t":
            timestamps.append(value)
        elif key == "v1":
            signatures.append(value)
    if len(timestamps) != 1 or not _TIMESTAMP.fullmatch(timestamps[0]):
        raise WebhookSignatureError("malformed", f"{SIGNATURE_HEADER} needs exactly one timestamp t=<unix seconds>.")
    if not signatures:
        raise WebhookSignatureError("malformed", f"{SIGNATURE_HEADER} has no v1 signature.")
    return int(timestamps[0]), signatures


def verify(
    body: bytes | str,
    header: str | bytes | None,
    secret: str,
    tolerance: float | None = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> None:
    """Check a delivery: returns None when `header` signs exactly `body` with `secret`, within `tolerance`
    seconds of `now` (default: the wall clock); raises `WebhookSignatureError` otherwise.

    Pass the raw request body, before any JSON parsing: re-encoding changes the bytes. `tolerance=None` skips
    the age check (for replaying recorded deliveries). A test that moves mockglot's clock should pass the
    server's time as `now`, since deliveries are signed on the server's clock.
    """
    timestamp, candidates = _parse(header)
    raw = body if isinstance(body, bytes) else str(body).encode("utf-8", "surrogatepass")
    expected = _digest(raw, secret, timestamp).encode()
    matched = False
    for candidate in candidates:
        if _HEX_SIGNATURE.fullmatch(candidate):  # anything else cannot match; compare only like with like
            matched |= hmac.compare_digest(expected, candidate.encode())
    if not matched:
        raise WebhookSignatureError(
            "mismatch",
            "No v1 signature matches this body and secret: check the endpoint's signing secret, and verify the "
            "raw body as received.",
        )
    if tolerance is not None:
        age = (time.time() if now is None else now) - timestamp
        if abs(age) > tolerance:
            when = f"{age:.1f} s ago" if age > 0 else f"{-age:.1f} s in the future"
            raise WebhookSignatureError(
                "timestamp", f"The signature was made {when}, beyond the tolerance of {tolerance:g} s."
            )
