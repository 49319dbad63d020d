"""A server reachable from other machines says so; a webhook cannot point at the server itself."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from mockglot.cli import banner, exposure_warning
from mockglot.settings import Settings
from mockglot.testing.server import ServerThread


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "mockglot.internal"])
def test_binding_beyond_loopback_without_a_control_token_warns_naming_the_risk_and_the_flag(host):
    settings = Settings(host=host, port=8080)
    warning = exposure_warning(settings)
    assert warning is not None
    assert "--control-token" in warning and "reset state" in warning and host in warning
    assert "localhost" not in banner(settings, 8080).splitlines()[0]  # it does not claim to be local
    assert exposure_warning(Settings(host=host, control_token="s3cret")) is None


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.5", "::1", "localhost"])
def test_loopback_needs_no_warning(host):
    assert exposure_warning(Settings(host=host)) is None
    assert "http://localhost:8080/v1" in banner(Settings(host=host), 8080)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with ServerThread(Settings(port=0)) as running:
        yield running


def self_urls(port: int) -> list[str]:
    return [
        f"http://127.0.0.1:{port}/_mockglot/reset",
        f"http://localhost:{port}/hooks",
        f"http://LOCALHOST.:{port}/hooks",
        f"http://127.1:{port}/hooks",
        f"http://2130706433:{port}/hooks",
        f"http://[::1]:{port}/hooks",
        f"http://[::ffff:127.0.0.1]:{port}/hooks",
        f"http://0.0.0.0:{port}/hooks",
        f"https://127.0.0.1:{port}/hooks",
    ]


def test_a_webhook_at_the_server_itself_is_refused_with_a_422(server):
    for url in self_urls(server.port):
        response = httpx.post(f"{server.base_url}/_mockglot/webhooks", json={"url": url})
        assert response.status_code == 422, url
        error = response.json()["error"]
        assert error["param"] == "url" and "this mockglot server itself" in error["message"]
    assert httpx.get(f"{server.base_url}/_mockglot/webhooks").json()["data"] == []


def test_a_webhook_on_another_port_of_this_machine_is_fine(server):
    response = httpx.post(f"{server.base_url}/_mockglot/webhooks", json={"url": f"http://127.0.0.1:{server.port + 1}/"})
    assert response.status_code == 201
    httpx.delete(f"{server.base_url}/_mockglot/webhooks/{response.json()['id']}")
