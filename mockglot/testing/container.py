"""mockglot's image under testcontainers-python: `MockglotContainer` starts it, waits for health, and hands out
the same helpers as the pytest fixture (install with the `container` extra).

    with MockglotContainer("mockglot") as container:
        session = container.mockglot.client.create_session(source_language="de", target_language="en")
        container.mockglot.frames(session["id"])

testcontainers finds Docker through `DOCKER_HOST` (with podman: `podman system service --time=0
unix:///tmp/podman.sock &` then `DOCKER_HOST=unix:///tmp/podman.sock`). The image is not pulled if it exists
locally; build it with `docker build -t mockglot .` from a checkout.
"""

from __future__ import annotations

from typing import Any, Self

import httpx
from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import HttpWaitStrategy

from mockglot.testing.plugin import Mockglot, MockglotServer

PORT = 8080
HEALTH = "/_mockglot/health"


class MockglotContainer(DockerContainer):
    """The mockglot image on a free host port; `settings` are `mockglot serve` settings (`seed=42`,
    `output_pace="instant"`), passed as `MOCKGLOT_*` environment variables."""

    def __init__(
        self,
        image: str = "mockglot",
        *,
        control_token: str | None = None,
        startup_timeout: int = 60,
        **settings: Any,
    ) -> None:
        super().__init__(image)
        self.control_token = control_token
        if control_token:
            settings["control_token"] = control_token
        for name, value in settings.items():
            text = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
            self.with_env(f"MOCKGLOT_{name.upper()}", text)
        self.with_exposed_ports(PORT)
        self.waiting_for(HttpWaitStrategy(PORT, HEALTH).for_status_code(200).with_startup_timeout(startup_timeout))
        self._helper: Mockglot | None = None

    def start(self) -> Self:
        super().start()
        self._helper = Mockglot(self.server)
        return self

    def stop(self, force: bool = True, delete_volume: bool = True) -> None:
        if self._helper is not None:
            self._helper.close()
            self._helper = None
        super().stop(force, delete_volume)

    @property
    def base_url(self) -> str:
        """`http://HOST:PORT`, the API's root (the API itself is under `/v1`)."""
        return f"http://{self.get_container_host_ip()}:{self.get_exposed_port(PORT)}"

    @property
    def server(self) -> MockglotServer:
        """The container as the pytest plugin sees a server (URLs and the control-plane token)."""
        return MockglotServer(self.base_url, self.control_token)

    @property
    def mockglot(self) -> Mockglot:
        """The helper the `mockglot` fixture gives a test: its own API key, clients, scenarios, faults, journals."""
        if self._helper is None:
            raise RuntimeError("MockglotContainer is not started: use `with MockglotContainer(...) as container`")
        return self._helper

    @property
    def api_key(self) -> str:
        return self.mockglot.api_key

    @property
    def control(self) -> httpx.Client:
        """An httpx client on the control plane (`/_mockglot/...`), with the token when there is one."""
        return self.mockglot.control

    def new_helper(self) -> Mockglot:
        """Another helper with a fresh API key (its own organization); close it when done."""
        return Mockglot(self.server)
