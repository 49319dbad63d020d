"""The pytest plugin as a user's project meets it: test files run by pytester in a subprocess, with no pytest
config of their own (so pytest-asyncio is in strict mode), against the in-process server or an external one."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from mockglot.settings import Settings
from mockglot.testing.client import SyncClient
from mockglot.testing.plugin import new_api_key
from mockglot.testing.server import ServerThread

pytest_plugins = ["pytester"]

ISOLATED_ENV = ("MOCKGLOT_URL", "MOCKGLOT_IMAGE", "MOCKGLOT_CONTROL_TOKEN", "PYTEST_XDIST_WORKER", "PYTEST_ADDOPTS")


@pytest.fixture
def user_project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A project directory with nothing configured, and no mockglot settings leaking in from this run."""
    for name in ISOLATED_ENV:
        monkeypatch.delenv(name, raising=False)
    return pytester


@pytest.fixture(scope="module")
def external() -> Iterator[ServerThread]:
    """A server the runs below share, as a docker container would be; protected by a control token."""
    with ServerThread(Settings(port=0, output_pace="instant", control_token="plugin-tests-token")) as server:
        yield server


def run(project: pytest.Pytester, *args: str) -> pytest.RunResult:
    """A fresh interpreter, as a user's run is; the heavy plugins these files don't use stay out, to start fast."""
    return project.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:schemathesis", *args
    )  # fmt: skip


def test_sync_tests_get_their_own_key_urls_and_an_empty_organization(user_project):
    user_project.makepyfile(
        textwrap.dedent(
            """
            import re

            seen = []

            def test_first(mockglot):
                assert re.fullmatch(r"sk_test_[A-Za-z0-9]{8,}", mockglot.api_key)
                assert mockglot.headers == {"Authorization": f"Bearer {mockglot.api_key}"}
                assert mockglot.ws_url == mockglot.base_url.replace("http://", "ws://")
                session = mockglot.client.create_session(source_language="de", target_language="en")
                assert session["stream"]["url"].startswith(mockglot.ws_url)
                assert [s["id"] for s in mockglot.sessions()] == [session["id"]]
                assert [r["path"] for r in mockglot.requests()] == ["/v1/sessions"]
                seen.append(mockglot.api_key)

            def test_second(mockglot):
                assert mockglot.api_key not in seen
                assert mockglot.sessions() == [] and mockglot.requests() == []
            """
        )
    )
    run(user_project).assert_outcomes(passed=2)


def test_asyncio_tests_work_without_asyncio_mode_auto(user_project):
    user_project.makepyfile(
        textwrap.dedent(
            """
            import pytest
            from mockglot.testing.client import utterance

            @pytest.mark.asyncio
            async def test_stream(mockglot):
                async with mockglot.async_client() as client:
                    session = await client.create_session(source_language="de", target_language="en")
                    stream = await client.open_stream(session)
                    await stream.send_audio("customer", utterance() * 2)
                    finals = await mockglot.frames_async(session["id"], type="transcript.final", wait_for=2)
                    assert [f["translation"]["text"] for f in finals] == [
                        "I want to change my order", "My order number is 12345"]
                    frames = await stream.end()
                assert frames[-1] == {"type": "session.ended", "session_id": session["id"], "reason": "explicit_end"}
            """
        )
    )
    run(user_project, "-W", "error::pytest.PytestUnraisableExceptionWarning").assert_outcomes(passed=1)


def test_the_marker_chooses_the_scenario_and_the_clock_is_given_back(user_project, monkeypatch):
    fixtures = user_project.mkdir("fixtures")
    (fixtures / "refund.yaml").write_text(
        textwrap.dedent(
            """
            name: refund
            source_language: en
            target_language: es
            turns:
              customer:
                - text: I would like a refund
                  translation: Quisiera un reembolso
            """
        ),
        encoding="utf-8",
    )
    monkeypatch.setenv("MOCKGLOT_FIXTURES", str(fixtures))  # MOCKGLOT_* configure the in-process server
    user_project.makepyfile(
        textwrap.dedent(
            """
            import pytest

            @pytest.mark.mockglot_scenario("refund")
            def test_marked(mockglot):
                assert mockglot.client.create_session()["id"]
                assert [s["scenario"] for s in mockglot.sessions()] == ["refund"]

            def test_unmarked_gets_the_default(mockglot):
                mockglot.client.create_session()
                assert [s["scenario"] for s in mockglot.sessions()] == ["order-change"]

            @pytest.mark.mockglot_scenario("no-such-scenario")
            def test_unknown_scenario_fails_setup(mockglot):
                pass

            def test_moves_the_clock(mockglot):
                start = mockglot.clock.now()
                mockglot.clock.advance(3600)
                mockglot.clock.set("2031-01-01T00:00:00Z")
                assert mockglot.clock.now().year == 2031 and start.year < 2031

            def test_the_clock_was_given_back(mockglot):
                offset = mockglot.control.get("/_mockglot/clock").json()["offset_seconds"]
                assert abs(offset) < 0.01
            """
        )
    )
    result = run(user_project, "-rE")
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(["*mockglot_scenario('no-such-scenario'): Unknown scenario*Known: *refund*"])


def test_a_reseed_and_a_webhook_endpoint_for_every_key_are_undone_when_the_test_ends(user_project):
    """Both are server-wide: the reset of the test's organization left the next tests a changed seed (other IDs
    than their seed promised) and a global endpoint that got their events."""
    user_project.makepyfile(
        textwrap.dedent(
            """
            def test_changes_the_server(mockglot):
                assert mockglot.control.get("/_mockglot/seed").json()["seed"] is None
                assert mockglot.control.post("/_mockglot/seed", json={"seed": 7}).status_code == 200
                for body in ({"url": "http://127.0.0.1:9/every-key"}, {"url": "http://127.0.0.1:9/own", "api_key":
                             mockglot.api_key}, {"url": "http://127.0.0.1:9/org", "organization": "org_other"}):
                    assert mockglot.control.post("/_mockglot/webhooks", json=body).status_code == 201
                mockglot.fault(status=503, error_code="service_unavailable", api_key=None)

            def test_starts_clean(mockglot):
                assert mockglot.control.get("/_mockglot/seed").json()["seed"] is None
                assert mockglot.control.get("/_mockglot/webhooks").json()["data"] == []
                assert mockglot.control.get("/_mockglot/faults").json()["data"] == []
                assert mockglot.client.create_session()["status"] == "created"
            """
        )
    )
    run(user_project).assert_outcomes(passed=2)


def test_a_clock_moved_with_a_plain_control_request_is_put_back_when_the_test_ends(user_project):
    """The clock is server-wide: moved through `mockglot.control` rather than `mockglot.clock`, it stayed moved
    for every later test (tokens expired, idle sessions ended)."""
    user_project.makepyfile(
        textwrap.dedent(
            """
            def test_moves_the_clock(mockglot):
                assert mockglot.control.post("/_mockglot/clock", json={"advance": 3600}).status_code == 200
                assert mockglot.control.post("/_mockglot/clock", json={"set": "2031-01-01"}).status_code == 200
                mockglot.clock.advance(60)

            def test_finds_it_as_it_was(mockglot):
                assert abs(mockglot.control.get("/_mockglot/clock").json()["offset_seconds"]) < 1
            """
        )
    )
    run(user_project).assert_outcomes(passed=2)


def test_mockglot_url_uses_an_external_server_with_its_control_token(user_project, external):
    user_project.makepyfile(
        textwrap.dedent(
            f"""
            def test_external(mockglot):
                assert mockglot.server.thread is None and mockglot.base_url == "{external.base_url}"
                assert mockglot.upload_scenario({{"name": "external-probe", "turns": {{}}}})["organization"]
                mockglot.client.create_session()
                assert len(mockglot.sessions()) == 1
            """
        )
    )
    url, token = f"--mockglot-url={external.base_url}", "--mockglot-control-token=plugin-tests-token"
    run(user_project, f"{url}/v1/", token).assert_outcomes(passed=1)  # the API's URL, as `mockglot stream` takes it
    uploaded = [loaded.name for _, loaded in external.call(external.state.scenarios.all)]
    assert "external-probe" not in uploaded  # the test's own upload went with its organization's reset

    without_token = run(user_project, url)
    without_token.assert_outcomes(errors=1)
    without_token.stdout.fnmatch_lines(["*control plane at http://127.0.0.1:* wants a token*"])

    unreachable = run(user_project, "--mockglot-url=http://127.0.0.1:9")
    unreachable.assert_outcomes(errors=1)
    unreachable.stdout.fnmatch_lines(["*no server answers at http://127.0.0.1:9*"])


def test_two_xdist_workers_on_one_server_never_see_each_others_sessions(user_project, external, monkeypatch):
    neighbour = new_api_key()
    with SyncClient(external.base_url, neighbour) as client:
        kept = client.create_session()  # someone else's session on the shared server
    keys_dir = user_project.mkdir("keys")
    monkeypatch.setenv("MOCKGLOT_URL", external.base_url)
    monkeypatch.setenv("MOCKGLOT_CONTROL_TOKEN", "plugin-tests-token")
    monkeypatch.setenv("KEYS_DIR", str(keys_dir))
    user_project.makepyfile(
        textwrap.dedent(
            """
            import os
            from pathlib import Path
            import pytest

            @pytest.mark.parametrize("n", range(8))
            def test_sessions_are_private(mockglot, n):
                assert mockglot.sessions() == []
                mine = {mockglot.client.create_session()["id"] for _ in range(3)}
                assert {s["id"] for s in mockglot.sessions()} == mine
                assert {r["api_key"][-4:] for r in mockglot.requests()} == {mockglot.api_key[-4:]}
                worker = os.environ["PYTEST_XDIST_WORKER"]
                (Path(os.environ["KEYS_DIR"]) / mockglot.api_key).write_text(worker)
            """
        )
    )
    run(user_project, "-n", "2").assert_outcomes(passed=8)
    written = {path.name: path.read_text() for path in Path(keys_dir).iterdir()}
    assert len(written) == 8  # eight tests, eight distinct keys
    assert set(written.values()) == {"gw0", "gw1"}  # both workers took part
    with SyncClient(external.base_url, neighbour) as client:
        assert client.get_session(kept["id"])["status"] == "created"  # no worker's reset reached it


def test_a_failed_test_names_its_sessions_inspector_pages_and_keeps_them(user_project, external):
    user_project.makepyfile(
        textwrap.dedent(
            """
            def test_fails(mockglot):
                mockglot.client.create_session()
                assert False, "on purpose"

            def test_passes(mockglot):
                mockglot.client.create_session()
            """
        )
    )
    url, token = f"--mockglot-url={external.base_url}", "--mockglot-control-token=plugin-tests-token"
    before = external.call(lambda: {s.id for s in external.state.sessions.all()})
    result = run(user_project, url, token)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*mockglot inspector*", f"{external.base_url}/_mockglot/ui/sessions/sess_* (created*"])
    shown = {line.split("/sessions/")[1].split()[0] for line in result.outlines if "/_mockglot/ui/sessions/" in line}
    kept = external.call(lambda: {s.id for s in external.state.sessions.all()}) - before
    assert kept == shown and len(shown) == 1  # the failed test's session stays; the passing one's is forgotten


def test_the_in_process_server_says_its_pages_go_with_the_run(user_project):
    user_project.makepyfile("def test_fails(mockglot):\n    assert False\n")
    result = run(user_project)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*mockglot inspector*",
            "no sessions; the test's requests: http://127.0.0.1:*/_mockglot/ui/requests",
            "*stops with the run*",
        ]
    )


def test_a_server_that_goes_away_mid_run_fails_its_tests_in_one_line_not_the_run(user_project):
    """A server that stopped answering (a crashed or stopped container) made the contract report's request raise
    inside a pytest hook: INTERNALERROR, and the whole run aborted with a traceback."""
    user_project.makepyfile(
        textwrap.dedent(
            """
            def test_stops_the_server(mockglot):
                mockglot.server.thread.__exit__(None, None, None)

            def test_after(mockglot):
                pass
            """
        )
    )
    result = run(user_project)
    result.assert_outcomes(passed=2, errors=2)
    assert "INTERNALERROR" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*mockglot: the server at http://127.0.0.1:* stopped answering (*"])
