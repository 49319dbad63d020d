"""Routes from the endpoint tables, and the router that serves them: Starlette's, told where to look first.

Starlette's `Router` tries every route's regular expression in turn. `IndexedRouter` tries only the routes that
can match the path (the routes of that exact fixed path and the templates with as many segments), in table
order, and otherwise behaves as Starlette's does (404, 405, WebSockets, the lifespan, routes added later).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from starlette.routing import BaseRoute, Match, Mount, Route, Router, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from mockglot.http import Endpoint


class MethodDispatch:
    """One path's endpoints by method (HEAD is served by GET), so a 405 lists every allowed method."""

    def __init__(self, apps: dict[str, ASGIApp]) -> None:
        self.apps = dict(apps)
        if "GET" in self.apps:
            self.apps.setdefault("HEAD", self.apps["GET"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.apps[scope["method"]](scope, receive, send)


class EndpointRoute(Route):
    """A Starlette `Route` for one path of an endpoint table, matched by comparing path segments (a template's
    parameter is any non-empty segment, as Starlette's `{name}` is) instead of a regular expression, and
    dispatching on the method without another layer. Everything else (405 with `Allow`, `url_path_for`) is
    Starlette's."""

    def __init__(self, path: str, apps: dict[str, ASGIApp]) -> None:
        dispatch = MethodDispatch(apps)
        super().__init__(path, dispatch, methods=list(apps))
        self.apps = dispatch.apps
        self.operations = {method: f"{method} {path}" for method in self.apps}  # the contract report's names
        parts = path.split("/")
        self.segments = tuple(None if part.startswith("{") else part for part in parts)
        self.names = tuple(part[1:-1] for part in parts if part.startswith("{"))
        at = [i for i, wanted in enumerate(self.segments) if wanted is None]
        self.parameters = tuple(zip(self.names, at, strict=True))  # (name, index of its segment)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http":
            return Match.NONE, {}
        return self.matches_parts(scope["path"].split("/"), scope["method"])

    def matches_parts(self, parts: list[str], method: str) -> tuple[Match, Scope]:
        """`matches`, for a path already split at its slashes (the router splits it once for every candidate)."""
        segments = self.segments
        if len(parts) != len(segments):
            return Match.NONE, {}
        for wanted, part in zip(segments, parts, strict=True):
            if wanted is None:
                if not part:
                    return Match.NONE, {}
            elif wanted != part:
                return Match.NONE, {}
        params = {}
        for name, i in self.parameters:
            params[name] = parts[i]
        child = {"endpoint": self.endpoint, "path_params": params}
        return (Match.FULL if method in self.apps else Match.PARTIAL), child

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self.apps.get(scope["method"])
        if app is None:
            await super().handle(scope, receive, send)  # Starlette's 405
        else:
            await app(scope, receive, send)


def endpoint_routes(
    endpoints: Iterable[Endpoint[Any]], build: Callable[[Endpoint[Any]], ASGIApp]
) -> list[EndpointRoute]:
    """One Starlette `Route` per path of the table, in table order; two rows for one method and path fail."""
    by_path: dict[str, dict[str, ASGIApp]] = {}
    for endpoint in endpoints:
        apps = by_path.setdefault(endpoint.path, {})
        if endpoint.method in apps:
            raise ValueError(f"two routes for {endpoint.method} {endpoint.path}")
        apps[endpoint.method] = build(endpoint)
    return [EndpointRoute(path, apps) for path, apps in by_path.items()]


class IndexedRouter(Router):
    def __init__(self, routes: Sequence[BaseRoute], **options: Any) -> None:
        super().__init__(routes, redirect_slashes=False, **options)
        self._indexed = -1  # how many routes the index covers
        self._fixed: dict[str, list[BaseRoute]] = {}
        self._templated: dict[int, list[BaseRoute]] = {}
        self._by_prefix: dict[tuple[int, str, str], list[BaseRoute]] = {}  # (slashes, first two segments) -> templates
        self._mounts: list[tuple[int, str, Mount]] = []  # (position, path prefix with its slash, mount)
        self._mount_prefixes: tuple[str, ...] = ()
        self._positions: dict[int, int] = {}  # id(route) -> position, to merge a mount with the other candidates
        self._other_http = False

    def _index(self) -> None:
        """(Re)built when routes were added, so `app.add_route` and friends keep working."""
        self._indexed = len(self.routes)
        fixed: dict[str, list[tuple[int, BaseRoute]]] = {}
        templated: dict[int, list[tuple[int, BaseRoute]]] = {}
        self._other_http = False
        self._mounts = []
        self._positions = {id(route): position for position, route in enumerate(self.routes)}
        for position, route in enumerate(self.routes):
            if isinstance(route, Mount) and route.path:
                self._mounts.append((position, route.path.rstrip("/") + "/", route))
            elif not isinstance(route, Route):
                self._other_http = self._other_http or not isinstance(route, WebSocketRoute)
            elif "{" in route.path:
                templated.setdefault(route.path.count("/"), []).append((position, route))
            else:
                fixed.setdefault(route.path, []).append((position, route))
        self._templated = {count: [r for _, r in rows] for count, rows in templated.items()}
        self._by_prefix = {}
        for count, rows in templated.items():
            if count < 2:
                continue
            shapes = [(route, _shape(route)) for _, route in rows]
            for key in {(count, shape[1], shape[2]) for _, shape in shapes if shape[1] and shape[2]}:
                self._by_prefix[key] = [  # the templates whose first two segments are these, or parameters
                    route for route, shape in shapes if shape[1] in (None, key[1]) and shape[2] in (None, key[2])
                ]
        self._mount_prefixes = tuple(prefix for _, prefix, _ in self._mounts)
        self._fixed = {
            path: [r for _, r in sorted(rows + templated.get(path.count("/"), []), key=lambda row: row[0])]
            for path, rows in fixed.items()
        }

    def _candidates(self, path: str, parts: list[str]) -> list[BaseRoute]:
        """The routes that can match `path` (split at its slashes as `parts`), in table order, mounts left out."""
        candidates = self._fixed.get(path)
        if candidates is None:
            slashes = len(parts) - 1
            if slashes >= 2:
                candidates = self._by_prefix.get((slashes, parts[1], parts[2]))
            if candidates is None:
                candidates = self._templated.get(slashes, [])
        return candidates

    def allowed(self, path: str) -> str:
        """The methods an endpoint table's route takes at `path`, as Starlette's 405 lists them in `Allow` (empty
        when none does): for a 405 that a fault asks for rather than routing finds."""
        if self._indexed != len(self.routes):
            self._index()
        parts = path.split("/")
        for route in self._candidates(path, parts):
            if isinstance(route, EndpointRoute) and route.matches_parts(parts, "")[0] is not Match.NONE:
                return ", ".join(sorted(route.methods or ()))
        return ""

    def endpoint_app(self, scope: Scope) -> ASGIApp | None:
        """The endpoint table's app that answers this HTTP request, with the scope filled in as `app` fills it
        (router, route, endpoint, path parameters); None when the request needs the whole of Starlette's path (a
        route of another kind or a mount may answer it, or nothing does: 404, 405). For the edge middleware: an
        endpoint answers its own errors, so Starlette's exception layer and this router's own pass have nothing
        to do for it."""
        if scope.get("root_path"):
            return None
        if self._indexed != len(self.routes):
            self._index()
        path: str = scope["path"]
        if self._other_http or path.startswith(self._mount_prefixes):
            return None
        parts = path.split("/")
        method: str = scope["method"]
        for route in self._candidates(path, parts):
            if type(route) is not EndpointRoute:
                return None
            match, child_scope = route.matches_parts(parts, method)
            if match is Match.FULL:
                if "router" not in scope:
                    scope["router"] = self
                scope["route"] = route
                scope.update(child_scope)
                return route.apps[method]
        return None

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("root_path"):
            await super().app(scope, receive, send)
            return
        if self._indexed != len(self.routes):
            self._index()
        if self._other_http:  # a Host or a route of another kind: Starlette's own scan knows how to match those
            await super().app(scope, receive, send)
            return
        if "router" not in scope:
            scope["router"] = self
        path: str = scope["path"]
        method: str = scope["method"]
        parts = path.split("/")
        candidates = self._candidates(path, parts)
        if path.startswith(self._mount_prefixes):
            mounts = [(position, mount) for position, prefix, mount in self._mounts if path.startswith(prefix)]
            rows = [(self._positions[id(route)], route) for route in candidates] + mounts
            candidates = [route for _, route in sorted(rows, key=lambda row: row[0])]
        partial: tuple[BaseRoute, Scope] | None = None
        for route in candidates:
            if type(route) is EndpointRoute:
                match, child_scope = route.matches_parts(parts, method)
                if match is Match.FULL:  # straight to the method's app: `handle` would look it up again
                    scope["route"] = route
                    scope.update(child_scope)
                    await route.apps[method](scope, receive, send)
                    return
            else:
                match, child_scope = route.matches(scope)
            if match is Match.FULL:
                scope["route"] = route
                scope.update(child_scope)
                await route.handle(scope, receive, send)
                return
            if match is Match.PARTIAL and partial is None:
                partial = (route, child_scope)
        if partial is not None:
            route, child_scope = partial
            scope["route"] = route
            scope.update(child_scope)
            await route.handle(scope, receive, send)
            return
        await self.default(scope, receive, send)


def _shape(route: BaseRoute) -> tuple[str | None, ...]:
    """A template's segments, None where a parameter may stand."""
    path: str = getattr(route, "path", "")
    return tuple(None if "{" in part else part for part in path.split("/"))
