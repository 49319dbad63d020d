"""Stripe-style cursor pages, shared by every list (agents, a session's recordings).

Newest first. `starting_after`: the page of older items after that one; `ending_before`: the page of newer
items just before it (in the same newest-first order). `has_more`: more lie beyond the page in the direction
it was fetched. [emulator] a cursor that names no item of the list (unknown, malformed, or another
organization's) is a 422 `invalid_field_value` naming the parameter: the list exists, so it is not a 404.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from mockglot.errors import ApiError

T = TypeVar("T")


@dataclass(slots=True)
class Page(Generic[T]):
    items: list[T]
    has_more: bool


def paginate(
    newest_first: Sequence[T],
    id_of: Callable[[T], str],
    limit: int,
    starting_after: str | None,
    ending_before: str | None,
    listed_by: str,
) -> Page[T]:
    """One page of `newest_first`; `listed_by` names the list in a bad cursor's message (GET /v1/agents)."""

    def index(item_id: str, param: str) -> int:
        for position, item in enumerate(newest_first):
            if id_of(item) == item_id:
                return position
        raise ApiError(
            "invalid_field_value",
            f"`{param}` must be the id of an item of this list (as listed by {listed_by}); {item_id!r} is not.",
            param=param,
        )

    if ending_before is not None:
        end = index(ending_before, "ending_before")
        start = max(end - limit, 0)
        return Page(list(newest_first[start:end]), start > 0)
    start = 0 if starting_after is None else index(starting_after, "starting_after") + 1
    return Page(list(newest_first[start : start + limit]), len(newest_first) > start + limit)
