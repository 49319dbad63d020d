"""`MockglotContainer` and the plugin's `--mockglot-image`, against the real image through testcontainers.

testcontainers speaks the Docker API: Docker's socket, DOCKER_HOST, or here podman's (`podman system service`,
started for the module by `containers.docker_api`). Its reaper (ryuk) is an image from Docker Hub, which this
machine cannot reach, so it is disabled; the containers are removed by `stop()` instead.
"""

from __future__ import annotations

import asyncio
import os
import textwrap
from collections.abc import Iterator

import pytest

from tests import containers
from tests.test_docker import docker_ok, image  # noqa: F401  (fixtures)
from tests.test_plugin import run as run_pytest

pytest_plugins = ["pytester"]


@pytest.fixture(scope="module")
def docker_api(image) -> Iterator[dict[str, str]]:  # noqa: F811
    """The environment testcontainers needs here, set for this module (and the pytest runs it starts)."""
    with containers.docker_api() as host:
        if host is None:
            pytest.skip("no Docker API socket: no DOCKER_HOST, no /var/run/docker.sock, and no podman to serve one")
        settings = {
            "DOCKER_HOST": host,
            "TESTCONTAINERS_RYUK_DISABLED": "true",
            # This machine is itself a container: testcontainers would look for a gateway (and podman's API
            # lacks the field it reads); the published ports are on loopback.
            "TESTCONTAINERS_CONNECTION_MODE": "docker_host",
            "TC_HOST": "127.0.0.1",
        }
        settings = {k: os.environ.get(k, v) for k, v in settings.items()}
        saved = {k: os.environ.get(k) for k in settings}
        os.environ.update(settings)
        from testcontainers.core.config import ConnectionMode, testcontainers_config

        testcontainers_config.ryuk_disabled = settings["TESTCONTAINERS_RYUK_DISABLED"] == "true"
        testcontainers_config.tc_host_override = settings["TC_HOST"]
        testcontainers_config.connection_mode_override = ConnectionMode(settings["TESTCONTAINERS_CONNECTION_MODE"])
        try:
            yield settings
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def test_container_waits_for_health_and_gives_the_fixtures_helpers(image, docker_api):  # noqa: F811
    from mockglot.testing.client import Client, utterance
    from mockglot.testing.container import MockglotContainer

    with MockglotContainer(image, output_pace="instant", control_token="tc-token") as container:
        assert container.base_url.startswith("http://127.0.0.1:")
        assert container.control.get("/_mockglot/health").json()["status"] == "ok"
        assert container.control.get("/_mockglot/clock").status_code == 200  # the token is sent
        helper = container.mockglot
        assert helper.api_key == container.api_key and helper.api_key.startswith("sk_test_")
        helper.use_scenario("order-change")
        session = helper.client.create_session(source_language="de", target_language="en")
        assert [s["id"] for s in helper.sessions()] == [session["id"]]

        async def call() -> None:
            async with Client(container.base_url, container.api_key) as client:
                stream = await client.open_stream(session)
                await stream.send_audio("customer", utterance())
                await stream.end()

        asyncio.run(call())
        (final,) = helper.frames(session["id"], wait_for=1, type="transcript.final")
        assert final["translation"]["text"] == "I want to change my order"
        other = container.new_helper()
        try:
            assert other.api_key != helper.api_key and other.sessions() == []
        finally:
            other.close()
        name = container.get_wrapped_container().name
    assert containers.docker("ps", "-a", "--filter", f"name={name}", "--format", "{{.Names}}").stdout.strip() == ""


def test_the_readmes_testcontainers_example_runs(image, docker_api, capsys):  # noqa: F811
    from tests.test_readme import blocks

    (example,) = blocks("Docker", "python")
    exec(compile(example.replace('MockglotContainer("mockglot"', f"MockglotContainer({image!r}"), "README", "exec"), {})
    base_url, stream_url = capsys.readouterr().out.split()
    assert base_url.startswith("http://127.0.0.1:") and stream_url.startswith(base_url.replace("http", "ws"))


USER_TEST = """
    def test_the_session_server_is_a_container(mockglot):
        session = mockglot.client.create_session(source_language="de", target_language="en")
        assert session["stream"]["url"].startswith(mockglot.ws_url)
        assert [s["id"] for s in mockglot.sessions()] == [session["id"]]
        assert mockglot.server.thread is None  # not the in-process server
"""


def test_plugin_runs_the_session_server_as_a_container_of_the_image(image, docker_api, pytester, monkeypatch):  # noqa: F811
    """One run through the environment variable (a container started costs seconds); the option is the same
    setting, checked by the report header of a collect-only run."""
    for name in ("MOCKGLOT_URL", "MOCKGLOT_IMAGE", "MOCKGLOT_CONTROL_TOKEN", "PYTEST_XDIST_WORKER", "PYTEST_ADDOPTS"):
        monkeypatch.delenv(name, raising=False)
    pytester.makepyfile(textwrap.dedent(USER_TEST))
    header = f"mockglot: a container of {image}, started on first use"
    run_pytest(pytester, "--co", "--mockglot-image", image).stdout.fnmatch_lines([header])
    monkeypatch.setenv("MOCKGLOT_IMAGE", image)
    result = run_pytest(pytester, "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([header])
