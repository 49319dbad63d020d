"""The inspector's sign-in: the control token, posted once from a form, becomes an HttpOnly cookie.

The cookie holds an HMAC of the token, never the token, so the token is in no URL, log line or script. A
state-changing control-plane call authenticated by the cookie must also carry `X-Mockglot-UI: 1`: a header a
cross-site form cannot send (and SameSite=Strict keeps the cookie off cross-site requests in the first place).
"""

from __future__ import annotations

import hashlib
import hmac

from mockglot.http import Request

COOKIE = "mockglot_inspector"
UI_HEADER = "x-mockglot-ui"
SAFE_METHODS = ("GET", "HEAD")


def cookie_value(token: str) -> str:
    return hmac.new(token.encode(), b"mockglot inspector sign-in", hashlib.sha256).hexdigest()


def set_cookie_header(token: str | None) -> tuple[bytes, bytes]:
    """The Set-Cookie header signing in (`token`) or out (None)."""
    value, age = (cookie_value(token), "") if token is not None else ("", "; Max-Age=0")
    return b"set-cookie", f"{COOKIE}={value}; Path=/_mockglot; HttpOnly; SameSite=Strict{age}".encode()


def presented_cookie(request: Request) -> str | None:
    for part in (request.headers.get("cookie") or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return value
    return None


def signed_in(request: Request, token: str) -> bool:
    """The request carries the inspector's cookie for `token` (and, unless it only reads, the UI header)."""
    presented = presented_cookie(request)
    if presented is None or not hmac.compare_digest(presented.encode(), cookie_value(token).encode()):
        return False
    return request.method in SAFE_METHODS or request.headers.get(UI_HEADER) == "1"
