"""The image, built and run for real: the README's Docker commands as written (with this run's own tag, host
port and container name), checked from the outside as a user would. Skipped, with the reason, where `docker`
cannot run; `.ci/run` sets it up with ../shared/container/setup.sh where that exists.

The Dockerfile's text is checked too (no engine needed): exec-form CMD without flags, non-root, a HEALTHCHECK,
the dependency layer ahead of the code, and a .dockerignore that sends the package and nothing else.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests import containers
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
KEY = "sk_test_dockerimage01"
CLIP = (ROOT / "fixtures" / "audio" / "ko_annyeonghaseyo.ulaw").read_bytes()


# --- the Dockerfile's text ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            found.append(Instruction(keyword.upper(), " ".join(args.split())))
    return found


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.lstrip("!").rstrip("/").replace("**/", "*/")
        if any(fnmatch.fnmatchcase(c, glob) or fnmatch.fnmatchcase(c, glob.removeprefix("*/")) for c in candidates):
            ignored = not negated
    return ignored


DOCKERFILE = parse_dockerfile((ROOT / "Dockerfile").read_text(encoding="utf-8"))


def only(keyword: str) -> Instruction:
    matching = [i for i in DOCKERFILE if i.keyword == keyword]
    assert len(matching) == 1, f"expected one {keyword}, found {matching}"
    return matching[0]


def test_dockerfile_settings_are_env_defaults_and_cmd_passes_no_flags():
    """Flags beat environment variables, so a CMD with flags would silently ignore `-e MOCKGLOT_PORT=...`."""
    assert json.loads(only("CMD").args) == ["mockglot", "serve"]
    env = only("ENV").args
    assert "MOCKGLOT_HOST=0.0.0.0" in env and "MOCKGLOT_PORT=8080" in env
    assert only("EXPOSE").args == "8080"


def test_dockerfile_installs_dependencies_before_the_code_arrives():
    """The final stage: pyproject.toml, the dependencies, then the installed package copied from its stage."""
    final = DOCKERFILE[max(i for i, x in enumerate(DOCKERFILE) if x.keyword == "FROM") :]
    steps = [(i.keyword, i.args) for i in final if i.keyword in ("COPY", "RUN", "ADD")]
    deps = next(n for n, (k, a) in enumerate(steps) if k == "RUN" and "pip install -r" in a)
    assert steps[deps - 1] == ("COPY", "pyproject.toml /tmp/build/pyproject.toml"), "deps read pyproject.toml alone"
    assert all(k == "COPY" and a.startswith("--from=package ") for k, a in steps[deps + 1 :]), steps
    keywords = [i.keyword for i in final]
    assert only("USER").args not in ("root", "0") and keywords.index("USER") > max(
        i for i, k in enumerate(keywords) if k == "RUN"
    )


def test_dockerignore_sends_the_package_and_nothing_else():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for kept in ("pyproject.toml", "README.md", "mockglot/app.py", "mockglot/builtin/scenarios/order-change.yaml"):
        assert not dockerignored(kept, patterns), kept
    for dropped in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/test_docker.py",
        "mockglot/__pycache__/app.cpython-311.pyc",
    ):
        assert dockerignored(dropped, patterns), dropped


# --- the README's commands, run -----------------------------------------------------------------------------


def readme_commands() -> list[list[str]]:
    """Every `docker ...` line of the README's shell blocks, split into words (continuations joined)."""
    commands = []
    for block in re.findall(r"^```sh\n(.*?)^```", README, re.DOTALL | re.MULTILINE):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("docker "):
                commands.append(shlex.split(line))
    return commands


def readme_command(*start: str, image: str = containers.README_IMAGE, has: str = "") -> list[str]:
    for words in readme_commands():
        if words[: len(start)] == list(start) and words[-1] == image and has in " ".join(words):
            return words
    raise AssertionError(f"the README has no `{' '.join(start)} ... {image}` command containing {has!r}")


@pytest.fixture(scope="session")
def docker_ok() -> None:
    problem = containers.docker_problem()
    if problem:
        pytest.skip(f"containers cannot run here: {problem}")


@pytest.fixture(scope="session")
def image(docker_ok) -> str:
    """`docker build -t mockglot .` as the README writes it, once per code version."""
    return containers.build(readme_command("docker", "build", image="."))[0]


@pytest.fixture(scope="session")
def vosk_image(docker_ok) -> str:
    return containers.build(readme_command("docker", "build", image=".", has="EXTRAS=vosk"))[0]


@dataclass
class Running:
    """A README `docker run` in the foreground (as a user runs it), reachable at `base_url`."""

    name: str
    base_url: str
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)

    def healthy(self) -> dict:
        """The health document once it answers; the container's output when it exited first."""
        try:
            return containers.wait_healthy(self.base_url, alive=lambda: self.process.poll() is None)
        except AssertionError as exc:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited: {self.process.communicate()[0][-3000:]}") from exc
            raise

    def stop(self, timeout: float = 60) -> int:
        containers.docker("stop", self.name, timeout=timeout)
        out, _ = self.process.communicate(timeout=timeout)
        self.output.append(out)
        return self.process.returncode


@pytest.fixture
def run_readme(tmp_path) -> Iterator:
    """`run_readme(words, image)`: run a README `docker run` with this test's name, a free host port and `image`;
    `~` and `$PWD` are this test's folder. Every container is removed when the test ends."""
    started: list[Running] = []

    def run(words: list[str], image: str, extra: list[str] = ()) -> Running:
        words = [re.sub(r"^~|(?<=[=:])~", str(tmp_path), w).replace("$PWD", str(tmp_path)) for w in words]
        for volume in (words[i + 1] for i, w in enumerate(words[:-1]) if w == "-v"):
            Path(volume.split(":")[0]).mkdir(parents=True, exist_ok=True)  # Docker would create it
        name, port = containers.container_name(), free_port()
        out: list[str] = ["docker", "run", "--name", name, *extra]
        rest = iter(words[2:-1])
        for word in rest:
            if word == "-p":
                container_port = next(rest).rsplit(":", 1)[1]
                out += ["-p", f"127.0.0.1:{port}:{container_port}"]
            elif word == "--name":
                next(rest)
            else:
                out.append(word)
        out.append(image)
        process = subprocess.Popen(out, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        running = Running(name, f"http://127.0.0.1:{port}", process)
        started.append(running)
        return running

    try:
        yield run
    finally:
        for running in started:
            containers.remove(running.name)
            if running.process.poll() is None:
                running.process.kill()
            running.process.communicate(timeout=60)


def create(base_url: str, **body) -> httpx.Response:
    body = {"mode": "bidirectional_translation", "source_language": "de", "target_language": "en", **body}
    return httpx.post(f"{base_url}/v1/sessions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)


def test_docker_run_serves_health_and_a_create_as_non_root_and_stops_cleanly(image, run_readme):
    words = ["docker", "run", "--rm", "-p", "8080:8080", "mockglot"]
    assert words in readme_commands()
    running = run_readme(words, image)
    health = running.healthy()
    assert health["status"] == "ok" and health["engine"] == "scripted"
    created = create(running.base_url)
    assert created.status_code == 201, created.text
    assert created.json()["stream"]["url"].startswith("ws://127.0.0.1:")  # the Host the client used

    assert containers.docker("exec", running.name, "id", "-u").stdout.strip() != "0"
    assert containers.health_status(running.name) == "healthy"

    told = asyncio.run(_stop_with_a_live_stream(running, created.json()))
    assert running.process.returncode == 0, running.output
    ended = [f for f in told["frames"] if f["type"] == "session.ended"]
    assert [f["reason"] for f in ended] == ["server_shutdown"] and told["close_code"] == 1001, told
    assert "Finished server process" in running.output[-1]


async def _stop_with_a_live_stream(running: Running, session: dict) -> dict:
    from websockets.asyncio.client import connect

    url = f"{session['stream']['url']}?token={session['stream']['token']}"
    async with connect(url) as websocket:
        await websocket.recv()  # session.started: the stream is live
        await asyncio.to_thread(running.stop)
        frames = []
        try:
            async for message in websocket:
                frames.append(json.loads(message))
        except Exception:
            pass
        return {"close_code": websocket.close_code, "frames": frames}


def test_env_settings_take_effect_seed_port_engine_and_mounted_fixtures(image, run_readme, tmp_path):
    """The README's settings command, run from a folder holding `fixtures/scenarios`; then port and engine."""
    scenarios = tmp_path / "fixtures" / "scenarios"
    scenarios.mkdir(parents=True)
    (scenarios / "refund.yaml").write_text(
        "name: refund-from-mount\nsource_language: de\ntarget_language: en\n"
        "turns:\n  customer:\n    - text: Ich möchte mein Geld zurück\n      translation: I want a refund\n",
        encoding="utf-8",
    )
    os.chmod(tmp_path, 0o755)  # the container's non-root user reads the mount
    words = readme_command("docker", "run", has="MOCKGLOT_SEED")
    assert "MOCKGLOT_FIXTURES=/fixtures" in words
    running = run_readme(words, image)
    running.healthy()
    listed = httpx.get(f"{running.base_url}/_mockglot/scenarios").json()
    assert "refund-from-mount" in json.dumps(listed)

    seed = int(next(w for w in words if w.startswith("MOCKGLOT_SEED=")).split("=")[1])
    httpx.post(f"{running.base_url}/_mockglot/clock", json={"set": 1_780_000_000})
    assert create(running.base_url).json()["id"] == _seeded_id(seed)

    moved = run_readme(["docker", "run", "--rm", "-p", "9000:9000", "-e", "MOCKGLOT_PORT=9000", "mockglot"], image)
    moved.healthy()  # the engine setting is checked by the Vosk image's test


def test_the_conformance_suite_passes_against_the_container(image, run_readme):
    """`mockglot conform` (the contract on the wire) against the README's plain `docker run`."""
    running = run_readme(["docker", "run", "--rm", "-p", "8080:8080", "mockglot"], image)
    running.healthy()
    # Webhook checks need a receiver the container can reach: this machine's address on the container's bridge.
    gateway = containers.docker("inspect", "--format", "{{.NetworkSettings.Gateway}}", running.name).stdout.strip()
    done = subprocess.run(
        [sys.executable, "-m", "mockglot", "conform", running.base_url, "--api-key", KEY, "--json",
         "--receiver-host", gateway],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    report = json.loads(done.stdout)
    failed = {c["id"]: c["reason"] for c in report["checks"] if c["status"] == "FAIL"}
    assert failed == {} and report["checks"], done.stderr[-2000:]


def _seeded_id(seed: int) -> str:
    """The first session ID an in-process server with this seed and clock gives: the container must agree."""
    from mockglot.settings import Settings
    from mockglot.testing.server import ServerThread

    with ServerThread(Settings(port=0, seed=seed)) as server:
        server.call(server.state.clock.set, 1_780_000_000)
        return create(server.base_url).json()["id"]


def test_vosk_image_recognizes_the_korean_clip(vosk_image, run_readme):
    running = run_readme(readme_command("docker", "run", image="mockglot:vosk"), vosk_image)
    assert running.healthy()["engine"] == "vosk"
    phrases = json.dumps(["안녕 하세요", "감사합니다"], ensure_ascii=False)  # Vosk's grammar, as the Vosk tests use
    session = create(running.base_url, source_language="ko", metadata={"mockglot_phrases": phrases}).json()
    finals = asyncio.run(_stream_clip(running.base_url, session))
    assert [(f["text"], f["translation"]["text"]) for f in finals] == [("안녕 하세요", "Hello")]


async def _stream_clip(base_url: str, session: dict) -> list[dict]:
    from mockglot.testing.client import Client

    async with Client(base_url, KEY) as client:
        stream = await client.open_stream(session)
        await stream.send_audio("customer", CLIP)
        await stream.end(timeout=120)
    return [f for f in stream.received if f.get("type") == "transcript.final"]


def test_image_sizes_are_the_readmes(image, vosk_image):
    """The README states each image's size; a change of more than 10% means the README needs the new figure."""
    for tag, label in ((image, "mockglot"), (vosk_image, "mockglot:vosk")):
        stated = re.search(rf"`{re.escape(label)}`[^|\n]*\|\s*(\d+) MB", README)
        assert stated, f"the README's image table has no size for {label}"
        size = containers.image_size_mb(tag)
        assert abs(size - int(stated.group(1))) <= 0.1 * size, f"{label} is {size:.0f} MB"
