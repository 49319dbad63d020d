"""Path templates to handlers, for every HTTP route of the server.

Starlette's router tries each route's regular expression in turn and builds a `Request` for the winner; here a
request costs one dict lookup (fixed paths) or a comparison of a few segments, which is what makes the REST
API's per-request cost close to the framework's own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mockglot.http import Request, Response

HttpHandler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Match:
    handler: HttpHandler | None  # None: the path exists, but not with this method
    params: dict[str, str]
    allowed: tuple[str, ...] = ()


@dataclass(slots=True)
class _Template:
    segments: tuple[str | None, ...]  # None where a `{param}` goes
    names: tuple[str, ...]
    handlers: dict[str, HttpHandler]

    def match(self, parts: list[str]) -> list[str] | None:
        """The parameter values when `parts` fits, else None; a parameter is never empty."""
        values = []
        for wanted, part in zip(self.segments, parts, strict=True):
            if wanted is None:
                if not part:
                    return None
                values.append(part)
            elif wanted != part:
                return None
        return values


class Router:
    def __init__(self) -> None:
        self._fixed: dict[str, dict[str, HttpHandler]] = {}
        self._templates: dict[int, list[_Template]] = {}

    def add(self, method: str, path: str, handler: HttpHandler) -> None:
        """`path` as in the API reference: `/v1/sessions/{session_id}`. A GET route answers HEAD too."""
        if "{" not in path:
            handlers = self._fixed.setdefault(path, {})
        else:
            parts = path.split("/")
            segments = tuple(None if part.startswith("{") else part for part in parts)
            bucket = self._templates.setdefault(len(parts), [])
            template = next((t for t in bucket if t.segments == segments), None)
            if template is None:
                names = tuple(part[1:-1] for part in parts if part.startswith("{"))
                template = _Template(segments, names, {})
                bucket.append(template)
            handlers = template.handlers
        if method in handlers:
            raise ValueError(f"two routes for {method} {path}")
        handlers[method] = handler
        if method == "GET":
            handlers.setdefault("HEAD", handler)

    def resolve(self, method: str, path: str) -> Match | None:
        """The handler and path parameters, a Match without handler (405), or None (404)."""
        handlers = self._fixed.get(path)
        if handlers is not None:
            return Match(handlers.get(method), {}, tuple(handlers))
        partial: Match | None = None
        parts = path.split("/")
        for template in self._templates.get(len(parts), ()):
            values = template.match(parts)
            if values is None:
                continue
            handler = template.handlers.get(method)
            found = Match(handler, dict(zip(template.names, values, strict=True)), tuple(template.handlers))
            if handler is not None:
                return found
            partial = partial or found
        return partial
