"""Webhooks (kallglot-api.md §8): signed, retried deliveries of lifecycle events.

What a receiver needs is here and imports nothing heavy:

    from mockglot.webhooks import WebhookSignatureError, verify

    verify(raw_body, request.headers.get("Kallglot-Signature"), "whsec_...")  # raises WebhookSignatureError

The endpoint registry lives in `mockglot.webhooks.state`, delivery in `mockglot.webhooks.dispatcher`.
"""

from mockglot.webhooks.signing import (
    DEFAULT_TOLERANCE_SECONDS,
    SIGNATURE_HEADER,
    WebhookSignatureError,
    sign,
    verify,
)

__all__ = ["DEFAULT_TOLERANCE_SECONDS", "SIGNATURE_HEADER", "WebhookSignatureError", "sign", "verify"]
