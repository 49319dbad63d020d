"""The query parameters of every list: `limit` (1-100, default 20), `starting_after`, `ending_before`.

[emulator] A bad `limit` or both cursors at once is a 422 `invalid_field_value` naming the parameter.
"""

from __future__ import annotations

import re

from mockglot.api.endpoint import Context
from mockglot.errors import ApiError

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
QUERY = {"limit": int, "starting_after": str, "ending_before": str}  # for the OpenAPI document
_DIGITS = re.compile(r"[0-9]{1,4}")


def page_query(ctx: Context) -> tuple[int, str | None, str | None]:
    """(limit, starting_after, ending_before) from the query string, checked."""
    raw = ctx.query("limit")
    if raw is not None and (not _DIGITS.fullmatch(raw) or not 1 <= int(raw) <= MAX_LIMIT):
        raise ApiError(
            "invalid_field_value",
            f"`limit` must be a whole number from 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT}); got {raw!r}.",
            param="limit",
        )
    starting_after = ctx.query("starting_after")
    ending_before = ctx.query("ending_before")
    if starting_after is not None and ending_before is not None:
        raise ApiError(
            "invalid_field_value",
            "Give at most one of `starting_after` (the next page) and `ending_before` (the previous page).",
            param="ending_before",
        )
    return (DEFAULT_LIMIT if raw is None else int(raw)), starting_after, ending_before
