"""Log setup for `mockglot serve`: readable text, or one JSON object a line for log collectors."""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(entry).decode()


_SECRET_IN_URL = re.compile(r"((?:^|[?&])(?:token|api_key)=)([^&\s\"]*)")
# Whatever it is called (`API_KEY=`, `api%5Fkey=`, a path): an API key or a stream token, by its shape.
_SECRET = re.compile(r"((?:sk|kst)_(?:live|test)_)[A-Za-z0-9]+")


def redact_url(text: str) -> str:
    """`?token=kst_test_abc` -> `?token=kst_test_<redacted>`; `api_key=sk_...` -> `api_key=<redacted>`; any other
    `sk_test_...` or `kst_live_...` -> its prefix and `<redacted>`. Text without a `=` or a key's prefix, as
    nearly every access line's is, is returned as it is without running the expressions."""
    if "=" not in text and "sk_" not in text and "kst_" not in text:
        return text

    def hide(match: re.Match[str]) -> str:
        value = match.group(2)
        keep = value[: value.index("_", 4) + 1] if value.startswith("kst_") and value.count("_") >= 2 else ""
        return f"{match.group(1)}{keep}<redacted>"

    return _SECRET.sub(r"\1<redacted>", _SECRET_IN_URL.sub(hide, text))


_REDACTED = "mockglot_redacted"  # set on a record once redacted: a logger's and a handler's filter both see it


class RedactSecrets(logging.Filter):
    """Redacts stream tokens and API keys in the URLs uvicorn logs (access lines, WebSocket accepts)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _REDACTED, False):  # the logger's filter did it; this is the handler's
            return True
        setattr(record, _REDACTED, True)
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(redact_url(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str) and not record.args:
            record.msg = redact_url(record.msg)
        return True


def uvicorn_log_config(log_format: str) -> dict[str, Any]:
    formatter = (
        {"()": "mockglot.logs.JsonFormatter"}
        if log_format == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "filters": {"redact": {"()": "mockglot.logs.RedactSecrets"}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "default", "filters": ["redact"]}},
        "loggers": {
            name: {"handlers": ["default"], "level": "INFO", "propagate": False}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "mockglot")
        },
    }
