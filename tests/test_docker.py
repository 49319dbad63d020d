"""The Dockerfile, checked without a Docker engine: its instructions are parsed; its COPY and install steps run
in a fresh venv (what `docker build` would do, minus the base image); its CMD serves from that venv; and its
HEALTHCHECK command, run as written, passes while the server is up and fails once it is down."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mockglot import cli

ROOT = Path(__file__).resolve().parents[1]
EXPOSED_PORT = "8080"


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


def exec_form(args: str) -> list[str]:
    """A JSON-array CMD/HEALTHCHECK: exec form, so signals reach the process and no shell is needed."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(item, str) for item in value), args
    return value


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


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text(encoding="utf-8"))


def only(instructions: list[Instruction], keyword: str) -> Instruction:
    matching = [i for i in instructions if i.keyword == keyword]
    assert len(matching) == 1, f"expected one {keyword}, found {matching}"
    return matching[0]


def build_arg_default(instructions: list[Instruction], name: str) -> str:
    return next(i.args.partition("=")[2] for i in instructions if i.keyword == "ARG" and i.args.startswith(name))


def healthcheck_command(instructions: list[Instruction]) -> list[str]:
    return exec_form(only(instructions, "HEALTHCHECK").args.split(" CMD ", 1)[1])


def test_image_is_slim_non_root_and_exposes_8080_with_a_healthcheck(dockerfile):
    assert only(dockerfile, "FROM").args == "python:3.11-slim"
    assert only(dockerfile, "EXPOSE").args == EXPOSED_PORT
    assert build_arg_default(dockerfile, "EXTRAS") == "tts"
    keywords = [i.keyword for i in dockerfile]
    user = only(dockerfile, "USER").args
    assert user not in ("root", "0") and keywords.index("USER") < keywords.index("CMD")
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN"), "installs run as root"
    probe = healthcheck_command(dockerfile)
    assert probe[:2] == ["python", "-c"] and "urllib" in probe[2] and "/_mockglot/health" in probe[2]


def test_cmd_runs_the_real_cli_entry_point(dockerfile):
    command = exec_form(only(dockerfile, "CMD").args)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert scripts.get(command[0]) == "mockglot.cli:main"
    args = cli.build_parser().parse_args(command[1:])
    assert (args.command, args.host, str(args.port)) == ("serve", "0.0.0.0", EXPOSED_PORT)


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


def copy_context(instructions: list[Instruction], workdir: Path) -> None:
    """What the COPY lines put in the image, copied from the checkout into `workdir`."""
    for copy in (i for i in instructions if i.keyword == "COPY"):
        *sources, target = shlex.split(copy.args)
        for source in sources:
            destination = workdir / target / (Path(source).name if target.endswith("/") else "")
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, destination, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / source, destination)


@pytest.fixture(scope="module")
def image(dockerfile, tmp_path_factory) -> Iterator[dict[str, str]]:
    """A fresh venv with the package installed by the Dockerfile's own install step; its environment."""
    root = tmp_path_factory.mktemp("image")
    workdir = root / "src"
    workdir.mkdir()
    copy_context(dockerfile, workdir)
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("MOCKGLOT_")
    }
    env |= {"VIRTUAL_ENV": str(root / "venv"), "PATH": f"{root / 'venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"}
    install = next(i.args for i in dockerfile if i.keyword == "RUN" and i.args.startswith("pip install"))
    install = install.replace("${EXTRAS}", build_arg_default(dockerfile, "EXTRAS"))
    done = subprocess.run(["sh", "-c", install], cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    shutil.rmtree(workdir)  # as the image does: the server must run from what pip installed
    env["HOME"] = str(root)
    yield env


def test_installed_image_serves_and_passes_its_healthcheck(dockerfile, image, tmp_path):
    where = "import mockglot, importlib.metadata as m; print(mockglot.__file__, m.version('espeakng-loader'))"
    installed = subprocess.run(
        ["python", "-c", where], env=image, cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    assert "site-packages" in installed and str(ROOT) not in installed  # the installed package, not the checkout

    command = exec_form(only(dockerfile, "CMD").args)
    command[command.index("--port") + 1] = "0"
    server = subprocess.Popen(
        command, env=image, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        banner = server.stdout.readline()  # type: ignore[union-attr]
        port = re.search(r"http://[^:/]+:(\d+)/v1", banner)
        assert port, f"no URL in the banner: {banner!r}"
        probe = [part.replace(f":{EXPOSED_PORT}/", f":{port.group(1)}/") for part in healthcheck_command(dockerfile)]
        healthy = subprocess.run(probe, env=image, cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert healthy.returncode == 0, healthy.stderr
    finally:
        server.terminate()
        server.wait(30)
    down = subprocess.run(probe, env=image, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert down.returncode != 0, "the healthcheck must fail when nothing serves"
