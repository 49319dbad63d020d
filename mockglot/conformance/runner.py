"""How checks are declared, run and reported.

A check is an async function that raises `Failed` (or `AssertionError`) when the server breaks the contract and
`Skipped` when it cannot be arranged. Each names its source, so a run against the real Kallglot API asserts only
what the documentation says:
- `seed`: the Quick Start's own example;
- `documented`: the documentation (kallglot-api.md, unmarked);
- `emulator`: one of mockglot's own decisions (marked [emulator]).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import msgspec

from mockglot.conformance.sources import SOURCES, Source

Status = Literal["PASS", "FAIL", "SKIP"]
CHECK_TIMEOUT_SECONDS = 20.0


class Failed(AssertionError):
    """The server broke the contract; the message says how."""


class Skipped(Exception):
    """The check cannot be arranged against this server."""


@dataclass(frozen=True, slots=True)
class Check:
    id: str
    source: Source
    run: Callable[[Conformance], Awaitable[None]]
    control: bool  # needs mockglot's control plane to arrange (keys, faults, clock, webhooks)
    doc: str


CHECKS: list[Check] = []


def check(id_: str, source: Source, *, control: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a check; its docstring's first paragraph says what it asserts."""

    def register(function: Callable[[Conformance], Awaitable[None]]) -> Callable[[Conformance], Awaitable[None]]:
        if any(c.id == id_ for c in CHECKS):
            raise ValueError(f"duplicate check {id_}")
        doc = " ".join((function.__doc__ or id_).strip().split("\n\n")[0].split())  # the first paragraph
        CHECKS.append(Check(id_, source, function, control, doc))
        return function

    return register


@dataclass(slots=True)
class Result:
    id: str
    source: Source
    status: Status
    reason: str
    seconds: float


@dataclass(slots=True)
class Report:
    url: str
    control_plane: bool
    sources: list[Source]
    results: list[Result] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not any(r.status == "FAIL" for r in self.results)

    def counts(self) -> dict[str, int]:
        return {s: sum(r.status == s for r in self.results) for s in ("PASS", "FAIL", "SKIP")}

    def text(self) -> str:
        width = max((len(r.id) for r in self.results), default=10)
        lines = [f"{r.status}  {r.source:<10}  {r.id:<{width}}  {r.reason}" for r in self.results]
        c = self.counts()
        lines.append(
            f"{len(self.results)} checks: {c['PASS']} passed, {c['FAIL']} failed, {c['SKIP']} skipped "
            f"in {self.seconds:.1f} s against {self.url} (sources: {', '.join(self.sources)}; control plane: "
            f"{'yes' if self.control_plane else 'no'})"
        )
        return "\n".join(lines)

    def json(self) -> bytes:
        return msgspec.json.encode(
            {
                "url": self.url,
                "control_plane": self.control_plane,
                "sources": self.sources,
                "ok": self.ok,
                "summary": self.counts(),
                "seconds": round(self.seconds, 3),
                "checks": [
                    {
                        "id": r.id,
                        "source": r.source,
                        "status": r.status,
                        "reason": r.reason,
                        "seconds": round(r.seconds, 3),
                    }
                    for r in self.results
                ],
            }
        )


class Conformance:
    """What a check talks to: the server's REST API with the run's key, its stream, and (on mockglot) its
    control plane."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        control: bool,
        control_token: str | None = None,
        receiver_host: str = "127.0.0.1",
        timeout: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.ws_base = "ws" + self.base_url.removeprefix("http")
        self.api_key = api_key
        self.has_control = control
        self.receiver_host = receiver_host
        self.timeout = timeout
        self.http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout)
        control_headers = {"Authorization": f"Bearer {control_token}"} if control_token else {}
        self._control = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, headers=control_headers)
        self.made_keys: list[str] = []

    async def aclose(self) -> None:
        for key in self.made_keys:  # forget what the run's own keys did
            with contextlib.suppress(httpx.HTTPError):
                await self._control.post("/_mockglot/reset", json={"api_key": key})
        await self.http.aclose()
        await self._control.aclose()

    # --- REST ---------------------------------------------------------------------------------------------

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.api_key}"}

    async def request(
        self, method: str, path: str, *, key: str | None = None, headers: dict[str, str] | None = None, **kw: Any
    ) -> httpx.Response:
        """A request with the run's key (or `key`); `headers` may override or drop (`None`-valued) headers."""
        merged = {**self.auth(key), **(headers or {})}
        return await self.http.request(method, path, headers=merged, **kw)

    async def create_session(self, key: str | None = None, **body: Any) -> dict[str, Any]:
        body.setdefault("mode", "bidirectional_translation")
        response = await self.request("POST", "/v1/sessions", key=key, json=body)
        expect_status(response, 201)
        session: dict[str, Any] = body_of(response)
        return session

    async def end_session(self, session_id: str, key: str | None = None) -> dict[str, Any]:
        response = await self.request("POST", f"/v1/sessions/{session_id}/end", key=key)
        expect_status(response, 200)
        summary: dict[str, Any] = body_of(response)
        return summary

    # --- control plane ------------------------------------------------------------------------------------

    async def control(self, method: str, path: str, **kw: Any) -> Any:
        if not self.has_control:
            raise Skipped("needs mockglot's control plane (/_mockglot)")
        response = await self._control.request(method, f"/_mockglot{path}", **kw)
        if response.is_error:
            raise Skipped(f"the control plane refused {method} {path}: {response.status_code} {response.text[:200]}")
        return response.json()

    async def new_key(self, **settings: Any) -> str:
        """A key of the run's own (mockglot only), set up through the control plane: credits, scopes, flags."""
        key = f"sk_test_conform{secrets.token_hex(8)}"
        await self.control("POST", "/keys", json={"key": key, **settings})
        self.made_keys.append(key)
        return key

    @contextlib.asynccontextmanager
    async def clock_moved(self, seconds: float) -> AsyncIterator[None]:
        """Advance the server's clock, and take the move back afterwards (the clock is server-wide)."""
        await self.control("POST", "/clock", json={"advance": seconds})
        try:
            yield
        finally:
            await self.control("POST", "/clock", json={"advance": -seconds})

    async def fault(self, **rule: Any) -> None:
        await self.control("POST", "/faults/rest", json=rule)


# --- expectations -----------------------------------------------------------------------------------------


def expect(condition: object, message: str) -> None:
    if not condition:
        raise Failed(message)


def body_of(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise Failed(
            f"{response.request.method} {response.request.url.path}: the body is not JSON: {response.text[:120]!r}"
        ) from None


def expect_status(response: httpx.Response, status: int) -> None:
    if response.status_code != status:
        where = f"{response.request.method} {response.request.url.path}"
        raise Failed(f"{where} answered {response.status_code}, expected {status}: {response.text[:200]}")
    expect_request_id(response)


def expect_request_id(response: httpx.Response) -> str:
    request_id: str = response.headers.get("x-request-id", "")
    expect(request_id.startswith("req_"), f"X-Request-ID is {request_id or 'missing'!r}, expected req_...")
    return request_id


def expect_error(
    response: httpx.Response, status: int, code: str | Iterable[str], param: str | bool | None = False
) -> dict[str, Any]:
    """The contract's envelope with this status and code; `param` checked unless False."""
    codes = {code} if isinstance(code, str) else set(code)
    where = f"{response.request.method} {response.request.url.path}"
    if response.status_code != status:
        raise Failed(f"{where} answered {response.status_code}, expected {status} {'/'.join(sorted(codes))}: "
                     f"{response.text[:200]}")  # fmt: skip
    request_id = expect_request_id(response)
    body = body_of(response)
    error = body.get("error") if isinstance(body, dict) else None
    expect(isinstance(error, dict), f"{where}: no `error` object in the body: {response.text[:200]}")
    assert isinstance(error, dict)
    missing = {"type", "code", "message", "param", "request_id"} - set(error)
    expect(not missing, f"{where}: the error envelope lacks {sorted(missing)}")
    expect(error["code"] in codes, f"{where}: error.code is {error['code']!r}, expected {'/'.join(sorted(codes))}")
    expect(error["request_id"] == request_id, f"{where}: error.request_id differs from X-Request-ID")
    if param is not False:
        expect(error["param"] == param, f"{where}: error.param is {error['param']!r}, expected {param!r}")
    return error


# --- running ----------------------------------------------------------------------------------------------


async def detect_control(base_url: str, control_token: str | None = None, timeout: float = 3.0) -> bool:
    """Whether `/_mockglot` answers (health needs no token, so also ask a protected route with it)."""
    async with httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout) as http:
        try:
            health = await http.get("/_mockglot/health")
            if health.status_code != 200 or not isinstance(health.json(), dict) or "version" not in health.json():
                return False
            headers = {"Authorization": f"Bearer {control_token}"} if control_token else {}
            return (await http.get("/_mockglot/clock", headers=headers)).status_code == 200
        except (httpx.HTTPError, ValueError):
            return False


async def run_checks(
    base_url: str,
    api_key: str,
    *,
    sources: Iterable[Source] | None = None,
    control_token: str | None = None,
    select: Callable[[Check], bool] | None = None,
    receiver_host: str = "127.0.0.1",
) -> Report:
    """Run every check (or those `select` keeps) and report. Without a control plane only `seed` and
    `documented` checks run unless `sources` says otherwise."""
    from mockglot.conformance import checks as _checks  # noqa: F401  (registers the checks)

    started = time.perf_counter()
    control = await detect_control(base_url, control_token)
    chosen: list[Source] = list(sources) if sources else list(SOURCES if control else ("seed", "documented"))
    report = Report(base_url, control, chosen)
    ctx = Conformance(base_url, api_key, control=control, control_token=control_token, receiver_host=receiver_host)
    try:
        for item in CHECKS:
            if select is not None and not select(item):
                continue
            report.results.append(await _run_one(ctx, item, chosen))
    finally:
        await ctx.aclose()
    report.seconds = time.perf_counter() - started
    return report


async def _run_one(ctx: Conformance, item: Check, sources: list[Source]) -> Result:
    if item.source not in sources:
        return Result(item.id, item.source, "SKIP", f"{item.source} check not selected", 0.0)
    if item.control and not ctx.has_control:
        return Result(item.id, item.source, "SKIP", "needs mockglot's control plane (/_mockglot does not answer)", 0)
    started = time.perf_counter()
    try:
        await asyncio.wait_for(item.run(ctx), CHECK_TIMEOUT_SECONDS)
        status: Status = "PASS"
        reason = item.doc
    except Skipped as exc:
        status, reason = "SKIP", str(exc)
    except AssertionError as exc:
        status, reason = "FAIL", str(exc) or "assertion failed"
    except TimeoutError:
        status, reason = "FAIL", f"no answer within {CHECK_TIMEOUT_SECONDS:g} s"
    except Exception as exc:  # a dropped connection, a malformed frame: the server's failure, not ours
        status, reason = "FAIL", f"{type(exc).__name__}: {exc}"
    return Result(item.id, item.source, status, reason.replace("\n", " "), time.perf_counter() - started)
