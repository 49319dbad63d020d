"""docker-compose.yml, the README's example of an application beside mockglot, run for real: `docker compose`
where it exists, else podman-compose. The file is run with this run's image and a project name of its own.

podman 4.3 (Debian bookworm, this machine) cannot wait for a container to become healthy, and podman-compose
says so and ignores `condition: service_healthy`; there the test starts mockglot, waits until its HEALTHCHECK
reports healthy, then runs the app, which is what the condition means. With `docker compose` the file runs as
the README says (`up --exit-code-from app`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests import containers
from tests.test_docker import README, docker_ok, image  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[1]


def compose_command() -> tuple[list[str], bool] | None:
    """The compose command, and whether it honours `condition: service_healthy`."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"], True
    podman_compose = shutil.which("podman-compose") or shutil.which(
        "podman-compose", path=str(Path(sys.executable).parent)
    )
    if podman_compose:
        version = subprocess.run(
            ["podman", "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True
        )
        major, minor = (int(x) for x in re.findall(r"\d+", version.stdout)[:2])
        return [podman_compose], (major, minor) >= (4, 6)
    return None


def test_the_compose_example_starts_the_app_once_mockglot_is_healthy(image, tmp_path):  # noqa: F811
    found = compose_command()
    if found is None:
        pytest.skip("neither `docker compose` nor podman-compose is installed")
    compose, waits_for_health = found
    assert "docker compose up --build --exit-code-from app" in README.replace("\\\n", " ")
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert spec["services"]["app"]["depends_on"] == {"mockglot": {"condition": "service_healthy"}}
    for service in spec["services"].values():
        service.pop("build", None)
        service["image"] = image  # built once for the run by the fixture
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    project = containers.container_name().replace(".", "-")
    base = [*compose, "-p", project, "-f", str(tmp_path / "docker-compose.yml")]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *args], capture_output=True, text=True, timeout=300, cwd=tmp_path)

    try:
        if waits_for_health:
            done = run("up", "--exit-code-from", "app")
        else:
            assert run("up", "-d", "mockglot").returncode == 0
            name = next(n for n in containers.docker("ps", "--format", "{{.Names}}").stdout.split() if project in n)
            assert containers.health_status(name) == "healthy"
            done = run("run", "--rm", "app")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert re.search(r"app: created sess_\w{26} created stream at ws://mockglot:8080/v1/sessions/", done.stdout)
    finally:
        run("down", "--volumes")
        for name in containers.docker("ps", "-a", "--format", "{{.Names}}").stdout.split():
            if project in name:
                containers.remove(name)
