"""Reaching the state store before serving: `mockglot serve --state redis://...` checks it answers, so a wrong
URL or a stopped Redis is one clear line at start instead of a 503 on the first request.

redis-py is imported here, inside the function: with the default in-memory state nothing pays for it.
"""

from __future__ import annotations

import urllib.parse

from mockglot.settings import redact


def check(url: str, timeout: float = 2.0) -> None:
    """PING the Redis (or Valkey) at `url`; a ValueError that names the URL (its password hidden) and says what
    to do when it does not answer within `timeout` seconds, refuses the credentials, or the URL is not one."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    except ValueError as exc:  # what redis-py cannot parse (a database that is not a number, an unknown scheme)
        raise ValueError(_message(url, str(exc))) from None
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        raise ValueError(_message(url, _reason(exc))) from None
    finally:
        client.close()


def _reason(exc: BaseException) -> str:
    """redis-py's words for a failure, or its class name when it has none (a timeout says nothing)."""
    text = str(exc).strip().rstrip(".")
    if isinstance(exc, TimeoutError) or type(exc).__name__ == "TimeoutError":
        return f"no answer in time ({text})" if text else "no answer in time"
    return text or type(exc).__name__


def _message(url: str, reason: str) -> str:
    password = urllib.parse.urlsplit(url).password if "://" in url else None
    if password:
        reason = reason.replace(password, "***")
    return (
        f"cannot reach the state store at {redact(url)}: {reason}. Start Redis (or Valkey) there, or drop --state "
        "to keep state in memory"
    )
