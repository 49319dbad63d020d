"""The real image for the container tests: whether `docker` runs here, the image built once per code version,
the README's Docker commands made safe to run side by side, and a Docker API socket for testcontainers.

Images are tagged `mockglot-test:<hash of what the build reads>`: a build is skipped when that tag exists, so
xdist workers, reruns and parallel checkouts share it, and a tag never names other code. Builds are serialized
by a file lock; with the layer cache a code change rebuilds only the package layer.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
README_IMAGE = "mockglot"  # the name the README's commands build and run
_NAMES = itertools.count(1)
_RUN = f"{os.getpid()}x{os.urandom(3).hex()}"


@functools.cache
def docker_problem() -> str | None:
    """Why containers cannot run here (the skip reason), or None."""
    if shutil.which("docker") is None:
        return "no `docker` command: install Docker, or run ../shared/container/setup.sh (podman) on this machine"
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 60 s"
    if done.returncode != 0:
        return f"`docker info` failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"
    return None


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def context_hash() -> str:
    """What `docker build` reads: the Dockerfile, .dockerignore and the files it lets through."""
    digest = hashlib.sha256()
    files = [ROOT / "Dockerfile", ROOT / ".dockerignore", ROOT / "pyproject.toml", ROOT / "README.md"]
    files += sorted(p for p in (ROOT / "mockglot").rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def tag_for(readme_tag: str) -> str:
    """`mockglot` -> `mockglot-test:<hash>`, `mockglot:vosk` -> `mockglot-test:<hash>-vosk`."""
    _, _, variant = readme_tag.partition(":")
    return f"mockglot-test:{context_hash()}" + (f"-{variant}" if variant else "")


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    with open(Path(tempfile.gettempdir()) / "mockglot-image-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build(words: list[str]) -> tuple[str, float]:
    """Run a README `docker build` command with the test tag; (tag, seconds, 0 when the tag already existed)."""
    index = words.index("-t") + 1
    tag = tag_for(words[index])
    with build_lock():
        if docker("image", "inspect", tag, check=False).returncode == 0:
            return tag, 0.0
        started = time.monotonic()
        command = [*words[:index], tag, *words[index + 1 :]]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        forget_old_images()
        return tag, time.monotonic() - started


def forget_old_images(age: str = "6h") -> None:
    """Each code version adds a tag: drop test tags older than `age` (other checkouts' runs use theirs for
    minutes, not hours; one a container still runs is refused by `rmi` and stays). No `image prune`: a build
    running beside this one may hold untagged layers it is about to use."""
    old = docker("images", "--filter", "reference=mockglot-test", "--filter", f"until={age}",
                 "--format", "{{.Repository}}:{{.Tag}}", check=False).stdout.split()  # fmt: skip
    if old:
        docker("rmi", *old, check=False)


def container_name() -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return f"mockglot-test-{_RUN}-{worker}-{next(_NAMES)}"


def image_size_mb(tag: str) -> float:
    return int(docker("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip()) / 1e6


def wait_healthy(base_url: str, timeout: float = 60, alive: Callable[[], bool] = lambda: True) -> dict:
    """The health document once the server answers; fails with the last error after `timeout` seconds, or as
    soon as `alive()` says the server is gone."""
    deadline = time.monotonic() + timeout
    last: Exception | str = "nothing tried"
    while time.monotonic() < deadline and alive():
        try:
            response = httpx.get(f"{base_url}/_mockglot/health", timeout=5)
            if response.status_code == 200:
                return response.json()
            last = f"status {response.status_code}"
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"{base_url} not healthy after {timeout} s: {last}")


def health_status(name: str, timeout: float = 60) -> str:
    """The container's HEALTHCHECK status once it leaves `starting` (podman, without systemd here, runs the
    check only on demand: `healthcheck run`; Docker runs it on its interval)."""
    deadline = time.monotonic() + timeout
    while True:
        docker("healthcheck", "run", name, check=False)
        status = docker("inspect", "--format", "{{.State.Health.Status}}", name).stdout.strip()
        if status != "starting" or time.monotonic() > deadline:
            return status
        time.sleep(1)


def remove(name: str) -> None:
    """Remove the container whatever state it is in (no error when it is gone already)."""
    subprocess.run(["docker", "rm", "--force", "--ignore", name], capture_output=True, timeout=60)


@contextlib.contextmanager
def docker_api() -> Iterator[str | None]:
    """A Docker API socket for testcontainers: DOCKER_HOST or Docker's own socket when there is one, else
    `podman system service` on a temporary socket for as long as the block runs. Yields DOCKER_HOST, or None
    (with the reason in `docker_api.problem`) when there is none."""
    if os.environ.get("DOCKER_HOST") or Path("/var/run/docker.sock").exists():
        yield os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        return
    if shutil.which("podman") is None:
        yield None
        return
    folder = tempfile.mkdtemp(prefix="mockglot-podman-")
    path = Path(folder) / "podman.sock"
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{path}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not path.exists() and service.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        yield f"unix://{path}" if path.exists() else None
    finally:
        service.terminate()
        service.wait(30)
        shutil.rmtree(folder, ignore_errors=True)
