"""The pytest plugin: one mockglot server for the test run, and a `mockglot` fixture per test.

The server is the real app under uvicorn in a background thread on a free port (one per xdist worker, started on
first use), or the external server named by `--mockglot-url` / `MOCKGLOT_URL` (a docker container, which every
worker shares), or a container of the image named by `--mockglot-image` / `MOCKGLOT_IMAGE` (one per worker,
through testcontainers). Each test gets its own API key, hence its own organization: its sessions, faults and journals
are invisible to every other test, other workers on a shared server included. Every helper speaks HTTP to the
control plane, so they work the same against either server.

The clock is the exception: it is server-wide. `mockglot.clock.advance()` moves time for everyone on that server
(on a shared server, the other workers too); the fixture undoes its own clock changes when the test ends, made
through `mockglot.clock` or a plain `mockglot.control.post("/_mockglot/clock", ...)` alike. So are
the seed and webhook endpoints registered without an API key: the fixture puts back a seed the test changed and
removes such endpoints.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import pytest

from mockglot.testing.client import Client, KallglotError, SharedTransport, SyncClient, bearer, checked, tls_context
from mockglot.testing.webhooks import webhook_receiver  # noqa: F401  (a fixture this plugin provides)

if TYPE_CHECKING:
    from mockglot.testing.container import MockglotContainer
    from mockglot.testing.server import ServerThread

ENV_URL = "MOCKGLOT_URL"
ENV_CONTROL_TOKEN = "MOCKGLOT_CONTROL_TOKEN"
ENV_IMAGE = "MOCKGLOT_IMAGE"
MARKER = "mockglot_scenario"
CONTROL_TIMEOUT = 30.0

_COUNTER = itertools.count(1)


class WaitTimeout(AssertionError):
    """`frames(wait_for=N)` gave up: fewer than N matching frames arrived within the timeout."""


def new_api_key() -> str:
    """A well-formed test key unique to this test and this xdist worker; the random tail keeps reruns against
    one container apart and makes the redacted form (`sk_test_…` + last 4) tell keys apart."""
    worker = re.sub(r"[^A-Za-z0-9]", "", os.environ.get("PYTEST_XDIST_WORKER", "main"))
    return f"sk_test_mg{worker}n{next(_COUNTER):04d}r{secrets.token_hex(4)}"


# --- the server -------------------------------------------------------------------------------------------


@dataclass
class MockglotServer:
    """Where the server is; `thread` is the in-process server, None for an external one.

    It holds the run's one connection pool: every test's clients borrow it, so a test neither loads a certificate
    store nor opens a connection (the two costs that made the fixture slow).
    """

    base_url: str
    control_token: str | None = None
    thread: ServerThread | None = None
    transport: SharedTransport = field(default_factory=SharedTransport)

    @property
    def ws_url(self) -> str:
        return re.sub(r"^http", "ws", self.base_url)

    @property
    def control_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.control_token}"} if self.control_token else {}

    def control_client(self) -> httpx.Client:
        """A client for the control plane on the run's pool (cheap: no certificates, no new connection)."""
        return httpx.Client(
            base_url=self.base_url, headers=self.control_headers, timeout=CONTROL_TIMEOUT, transport=self.transport
        )

    def check(self) -> None:
        """Fail the tests that need it, with the reason, when the server or its control plane can't be used."""
        with self.control_client() as http:
            try:
                health = http.get("/_mockglot/health", timeout=10)
                control = http.get("/_mockglot/clock", timeout=10)
            except httpx.HTTPError as exc:
                pytest.fail(f"mockglot: no server answers at {self.base_url} ({exc}). Start one (`mockglot serve`, "
                            f"`docker run`) or drop --mockglot-url/{ENV_URL}.", pytrace=False)  # fmt: skip
        if health.status_code != 200:
            pytest.fail(f"mockglot: {self.base_url}/_mockglot/health answered {health.status_code}", pytrace=False)
        if control.status_code == 401:
            pytest.fail(f"mockglot: the control plane at {self.base_url} wants a token: pass "
                        f"--mockglot-control-token or set {ENV_CONTROL_TOKEN}.", pytrace=False)  # fmt: skip


def _option(config: pytest.Config, name: str, env: str) -> str | None:
    return config.getoption(name) or os.environ.get(env) or None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mockglot", "mockglot, the Kallglot API emulator")
    group.addoption(
        "--mockglot-url", metavar="URL",
        help=f"test against the mockglot server at URL (e.g. a docker container) instead of one started "
             f"in-process ({ENV_URL})",
    )  # fmt: skip
    group.addoption(
        "--mockglot-image", metavar="IMAGE",
        help=f"run the session's server as a container of IMAGE (testcontainers; the `container` extra) instead "
             f"of in-process ({ENV_IMAGE})",
    )  # fmt: skip
    group.addoption(
        "--mockglot-control-token", metavar="TOKEN",
        help=f"bearer token of the server's /_mockglot control plane ({ENV_CONTROL_TOKEN})",
    )  # fmt: skip
    group.addoption(
        "--mockglot-no-contract-report", action="store_true",
        help="do not print the contract report (what the tests' client did that the Kallglot contract does not allow)",
    )  # fmt: skip
    group.addoption(
        "--mockglot-strict-contract", action="store_true",
        help="fail every test whose client did what the Kallglot contract does not allow",
    )  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(name): the scenario that the mockglot fixture's key uses for its next session"
    )
    if not config.getoption("mockglot_no_contract_report"):
        from mockglot.testing.contract import ContractReporting

        config.pluginmanager.register(ContractReporting(config), "mockglot-contract")


def pytest_report_header(config: pytest.Config) -> str:
    url = _option(config, "mockglot_url", ENV_URL)
    image = _option(config, "mockglot_image", ENV_IMAGE)
    if url:
        return f"mockglot: server at {url}"
    if image:
        return f"mockglot: a container of {image}, started on first use"
    return "mockglot: in-process server, started on first use"


def _in_process(token: str | None) -> ServerThread:
    """The real app on a free port; MOCKGLOT_* variables configure it, output is instant unless they say not."""
    from mockglot import settings as settings_module
    from mockglot.testing.server import ServerThread

    overrides: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "control_token": token}
    if not os.environ.get(settings_module.ENV_PREFIX + "OUTPUT_PACE"):
        overrides["output_pace"] = "instant"
    try:
        return ServerThread(settings_module.from_env(**overrides))
    except ValueError as exc:
        raise pytest.UsageError(f"mockglot: {exc}") from None


def _container(image: str, token: str | None) -> MockglotContainer:
    """A container of `image` (the image's own settings; output instant unless MOCKGLOT_OUTPUT_PACE says not).
    Host settings such as MOCKGLOT_PORT or fixture paths are not passed: they name this machine, not the image."""
    try:
        from mockglot.testing.container import MockglotContainer
    except ImportError as exc:
        raise pytest.UsageError(
            f"mockglot: --mockglot-image needs testcontainers ({exc}): pip install testcontainers"
        ) from None
    pace = os.environ.get("MOCKGLOT_OUTPUT_PACE") or "instant"
    return MockglotContainer(image, control_token=token, output_pace=pace)


@pytest.fixture(scope="session")
def mockglot_server(pytestconfig: pytest.Config) -> Iterator[MockglotServer]:
    """The run's server: external when `--mockglot-url`/MOCKGLOT_URL names one, else in-process."""
    url = _option(pytestconfig, "mockglot_url", ENV_URL)
    token = _option(pytestconfig, "mockglot_control_token", ENV_CONTROL_TOKEN)
    if url:
        from mockglot.stream_cli import server_url

        server = MockglotServer(server_url(url), token)  # `.../v1`, as `mockglot stream` and clients take it
        server.check()
        yield server
        server.transport.close_pool()
        return
    image = _option(pytestconfig, "mockglot_image", ENV_IMAGE)
    if image:
        with _container(image, token) as container:
            yield container.server
        return
    with _in_process(token) as thread:
        server = MockglotServer(thread.base_url, thread.settings.control_token, thread)
        yield server
        server.transport.close_pool()


# --- the per-test helper ----------------------------------------------------------------------------------


class ServerClock:
    """The server's clock, shared by everyone on the server; what this test moves, `undo()` moves back."""

    def __init__(self, control: httpx.Client) -> None:
        self._control = control
        self.moved = 0.0  # net seconds this test has moved the clock (through the fixture's `control`, any way)

    def _state(self, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        if body is None:
            return checked(self._control.get("/_mockglot/clock"))
        return checked(self._control.post("/_mockglot/clock", json=body))

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._state()["unix"], UTC)

    def advance(self, seconds: float) -> datetime:
        """Move time forward (or back, if negative); token expiry, idle end and idempotency follow at once."""
        state = self._state({"advance": seconds})  # counted in `moved` by the fixture's control hooks
        return datetime.fromtimestamp(state["unix"], UTC)

    def set(self, when: datetime | str | float) -> datetime:
        """Jump to `when`: a datetime (naive means UTC), ISO-8601 text, or unix seconds."""
        if isinstance(when, datetime):
            when = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
        state = self._state({"set": when})  # counted in `moved` by the fixture's control hooks
        return datetime.fromtimestamp(state["unix"], UTC)

    def undo(self) -> None:
        """Take back this test's moves, and only them, so other tests' moves on a shared server stand."""
        if self.moved:
            self._state({"advance": -self.moved})
        self.moved = 0.0


class Mockglot:
    """What the `mockglot` fixture gives a test: its own API key, the server's URLs, and control-plane helpers.

    Helpers raise `KallglotError` (status, code, message, param) when the control plane refuses a request.
    """

    def __init__(self, server: MockglotServer, api_key: str | None = None) -> None:
        self.server = server
        self.api_key = api_key or new_api_key()
        self.base_url = server.base_url
        self.ws_url = server.ws_url
        self.headers = bearer(self.api_key)
        self.control = server.control_client()
        self.control.event_hooks = {"request": [self._before_control], "response": [self._after_control]}
        self.clock = ServerClock(self.control)
        self._client: SyncClient | None = None
        # What the test changed through `control` that its organization's reset does not reach, for `close`:
        self._faults: list[str] = []  # armed faults (for another key, or every key)
        self._webhooks: list[str] = []  # webhook endpoints registered without this test's key (every key's)
        self._seed: tuple[int | None] | None = None  # the server's seed before the test's first reseed
        self._offset = 0.0  # the clock's offset before the control request under way
        self.keep = False  # a failed test's sessions stay on the server, for the inspector

    @property
    def client(self) -> SyncClient:
        """A blocking REST client with this test's key (`.http` is the raw httpx.Client)."""
        if self._client is None:
            self._client = SyncClient(self.base_url, self.api_key, transport=self.server.transport)
        return self._client

    def async_client(self) -> Client:
        """A new async client (REST and the stream) with this test's key: `async with mockglot.async_client()`."""
        return Client(self.base_url, self.api_key)

    # scenarios

    def use_scenario(self, name: str, sessions: int | None = None) -> None:
        """This test's sessions play scenario `name` (unless their metadata names another): all of them, or
        the next `sessions`."""
        body = {"api_key": self.api_key, "scenario": name, "sessions": sessions}
        checked(self.control.post("/_mockglot/scenarios/next", json=body))

    def upload_scenario(self, scenario: Mapping[str, Any] | str) -> dict[str, Any]:
        """Upload a scenario (a dict, or YAML text) for this test's organization only (parallel tests never see
        each other's); it goes with the organization's reset."""
        body: dict[str, Any] = {"yaml": scenario} if isinstance(scenario, str) else {"scenario": dict(scenario)}
        body["api_key"] = self.api_key
        return checked(self.control.post("/_mockglot/scenarios", json=body))

    # faults

    def fault(self, **rule: Any) -> dict[str, Any]:
        """Arm a REST fault (method, path, status, error_code, latency_ms, drop, times, probability).

        It only hits this test's key unless `api_key=None` is given. Disarmed when the test ends.
        """
        return self._arm("rest", rule)

    def stream_fault(self, **rule: Any) -> dict[str, Any]:
        """Arm a stream fault (action, after_frames, after_finals, close_code, error_code, session_id, ...)."""
        return self._arm("stream", rule)

    def _arm(self, kind: str, rule: dict[str, Any]) -> dict[str, Any]:
        rule.setdefault("api_key", self.api_key)
        return checked(self.control.post(f"/_mockglot/faults/{kind}", json=rule))  # disarmed by `close`

    def _before_control(self, request: httpx.Request) -> None:
        """Before the test's first reseed, note the seed it replaces; before a clock change, the clock's offset
        (both are server-wide)."""
        if request.method != "POST":
            return
        path = request.url.path
        if path.endswith("/_mockglot/clock"):
            self._offset = checked(self.control.get("/_mockglot/clock"))["offset_seconds"]
        elif self._seed is None and path.endswith("/_mockglot/seed"):
            self._seed = (checked(self.control.get("/_mockglot/seed"))["seed"],)

    def _after_control(self, response: httpx.Response) -> None:
        """Note the clock moves, faults and webhook endpoints for every key that the test made through `control`:
        they would outlive the test (a global endpoint gets every later test's events)."""
        request = response.request
        path = request.url.path
        if request.method == "POST" and path.endswith("/_mockglot/clock") and response.status_code == 200:
            response.read()  # a response hook runs before the body is read
            self.clock.moved += response.json()["offset_seconds"] - self._offset  # however the test moved it
            return
        if request.method != "POST" or response.status_code != 201:
            return
        if path.endswith(("/_mockglot/faults/rest", "/_mockglot/faults/stream")):
            self._faults.append(_created_id(response))
        elif path.endswith("/_mockglot/webhooks") and _json_field(request, "api_key") != self.api_key:
            self._webhooks.append(_created_id(response))

    # what the server saw

    def sessions(self) -> list[dict[str, Any]]:
        """This key's sessions as the server sees them (status, scenario, frame counts, audio received)."""
        sessions: list[dict[str, Any]] = checked(
            self.control.get("/_mockglot/sessions", params={"api_key": self.api_key})
        )["data"]
        return sessions

    def requests(self) -> list[dict[str, Any]]:
        """This key's HTTP requests to the public API, oldest first, credentials redacted."""
        requests: list[dict[str, Any]] = checked(
            self.control.get("/_mockglot/requests", params={"api_key": self.api_key})
        )["data"]
        return requests

    def contract(self, *, settle: float = 0.0) -> dict[str, Any]:
        """This key's contract report: violations and coverage (`settle`: wait that long for streams to close)."""
        params: dict[str, str | float] = {"api_key": self.api_key, "settle": settle}
        report: dict[str, Any] = checked(self.control.get("/_mockglot/contract", params=params))
        return report

    def received_audio(self, session_id: str, speaker: str, *, encoding: str = "mulaw") -> bytes:
        """The audio the server received from `speaker` as a WAV file: mu-law byte for byte, or `pcm`."""
        response = self.control.get(f"/_mockglot/sessions/{session_id}/audio/{speaker}", params={"encoding": encoding})
        if response.is_error:
            raise KallglotError(response)
        return response.content

    def frames(
        self,
        session_id: str,
        *,
        wait_for: int = 0,
        type: str | None = None,
        direction: str | None = None,
        timeout: float = 10.0,
    ) -> list[Any]:
        """The session's frames (decoded), both directions unless `direction` is `in` or `out`.

        `wait_for=N` blocks on the server until N matching frames exist, and raises `WaitTimeout` after
        `timeout` seconds if they don't. It blocks this thread: in async tests use `frames_async`.
        """
        params = _frame_params(wait_for, type, direction, timeout)
        response = self.control.get(f"/_mockglot/sessions/{session_id}/frames", params=params, timeout=timeout + 10)
        return _journal_frames(checked(response), wait_for, type)

    async def frames_async(
        self,
        session_id: str,
        *,
        wait_for: int = 0,
        type: str | None = None,
        direction: str | None = None,
        timeout: float = 10.0,
    ) -> list[Any]:
        """`frames`, awaitable: the event loop (and the client under test on it) runs while it waits."""
        params = _frame_params(wait_for, type, direction, timeout)
        async with httpx.AsyncClient(
            base_url=self.base_url, headers=self.server.control_headers, verify=tls_context()
        ) as http:
            response = await http.get(f"/_mockglot/sessions/{session_id}/frames", params=params, timeout=timeout + 10)
        return _journal_frames(checked(response), wait_for, type)

    def inject(self, session_id: str, frame: Mapping[str, Any] | None = None, *, raw: str | None = None) -> None:
        """Send `frame` (session_id added) or `raw` text to the client of the session's live stream."""
        body = {"frame": dict(frame)} if frame is not None else {"raw": raw}
        checked(self.control.post(f"/_mockglot/sessions/{session_id}/inject", json=body))

    # lifecycle

    def reset(self) -> None:
        """Forget this key's organization (sessions, faults, journals, usage); nobody else's."""
        checked(self.control.post("/_mockglot/reset", json={"api_key": self.api_key}))

    def inspector_report(self) -> str:
        """Where the inspector shows what this test did: one URL per session (or its requests)."""
        ui = f"{self.base_url}/_mockglot/ui"
        try:
            sessions = self.sessions()
        except (httpx.HTTPError, KallglotError) as exc:
            return f"the server's control plane did not answer ({exc}); the inspector is at {ui}"
        lines = [f"{ui}/sessions/{s['id']}  ({s['status']}, {s['frames_in']} frames in)" for s in sessions]
        lines = lines or [f"no sessions; the test's requests: {ui}/requests"]
        if self.server.thread is not None:
            lines.append(
                "(this in-process server stops with the run: run against a kept-alive one, e.g. a "
                "container, with --mockglot-url to open these afterwards)"
            )
        return "\n".join(lines)

    def close(self) -> None:
        """Undo the test's clock moves, disarm its faults, remove the webhook endpoints it registered for every
        key, put back the seed it replaced, forget its state (unless the test failed), close the clients."""
        try:
            self.clock.undo()
            for fault_id in self._faults:
                self.control.delete(f"/_mockglot/faults/{fault_id}")  # 404 when it already went: fine
            for endpoint_id in self._webhooks:
                self.control.delete(f"/_mockglot/webhooks/{endpoint_id}")  # likewise
            if self._seed is not None:
                self.control.post("/_mockglot/seed", json={"seed": self._seed[0]})
            if not self.keep:
                self.reset()
        finally:
            if self._client is not None:
                self._client.close()
            self.control.close()


def _created_id(response: httpx.Response) -> str:
    response.read()  # a response hook runs before the body is read
    created: str = response.json()["id"]
    return created


def _json_field(request: httpx.Request, name: str) -> Any:
    """A field of the request's JSON body, or None (a refused body never gets a 201)."""
    try:
        body = msgspec.json.decode(request.content)
    except msgspec.DecodeError:
        return None
    return body.get(name) if isinstance(body, dict) else None


def _frame_params(wait_for: int, type_: str | None, direction: str | None, timeout: float) -> dict[str, Any]:
    params: dict[str, Any] = {"wait_for": wait_for, "timeout": timeout}
    if type_ is not None:
        params["type"] = type_
    if direction is not None:
        params["direction"] = direction
    return params


def _journal_frames(journal: dict[str, Any], wait_for: int, type_: str | None) -> list[Any]:
    if not journal["complete"]:
        seen = ", ".join(entry["type"] for entry in journal["frames"][-20:]) or "nothing"
        raise WaitTimeout(
            f"waited for {wait_for} {type_ or 'frames'} on {journal['session_id']}, got {journal['count']} "
            f"(last: {seen})"
        )
    return [entry["frame"] for entry in journal["frames"]]


def _scenario_of(marker: pytest.Mark) -> str:
    name = marker.args[0] if marker.args else marker.kwargs.get("name")
    if not isinstance(name, str):
        raise pytest.UsageError(f'@pytest.mark.{MARKER} takes one scenario name: @pytest.mark.{MARKER}("refund")')
    return name


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test that used `mockglot` keeps its sessions and names their inspector pages in its report."""
    report = yield
    helper = getattr(item, "funcargs", {}).get("mockglot")
    if report.failed and report.when == "call" and isinstance(helper, Mockglot):  # type: ignore[attr-defined]
        helper.keep = True
        report.sections.append(("mockglot inspector", helper.inspector_report()))  # type: ignore[attr-defined]
    return report


@pytest.fixture
def mockglot(mockglot_server: MockglotServer, request: pytest.FixtureRequest) -> Iterator[Mockglot]:
    """A fresh API key (its own organization) on the run's server, with control-plane helpers.

    The key is new (a counter and a random tail), so its organization starts empty without a reset; the one
    teardown request forgets it (plus one per clock move to undo, fault to disarm, endpoint for every key to
    remove, and one for a seed to put back).
    """
    helper = Mockglot(mockglot_server)
    try:
        marker = request.node.get_closest_marker(MARKER)
        if marker is not None:
            name = _scenario_of(marker)
            try:
                helper.use_scenario(name)
            except KallglotError as exc:
                pytest.fail(f"@pytest.mark.{MARKER}({name!r}): {exc.error_message}", pytrace=False)
        yield helper
    finally:
        try:
            helper.close()
        except httpx.TransportError as exc:  # a container that crashed or was stopped mid-run: say so in one line
            pytest.fail(f"mockglot: the server at {helper.base_url} stopped answering ({exc})", pytrace=False)
