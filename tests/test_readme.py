"""The README's examples, run, so they cannot rot: the pytest section's files under pytester, the CLI's commands
and the curl walk-through against a real server, the control-plane table against the served OpenAPI document,
and the Docker commands against the Dockerfile and the settings."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import msgspec
import pytest

from mockglot.engines.vosk import CONTAINER_MODEL_DIR
from mockglot.settings import Settings
from tests.test_docker import parse_dockerfile
from tests.test_plugin import run as run_pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.DOTALL | re.MULTILINE)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def blocks(title: str, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(section(title)) if lang == language]


def shell_commands(block: str) -> list[str]:
    """The block's commands: continuation lines joined, comments and blank lines dropped."""
    joined = block.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.fixture
def shell_env(live, tmp_path) -> dict[str, str]:
    """A reader's shell: this venv's `mockglot` on PATH, the server as MOCKGLOT_URL, a checkout's fixtures."""
    (tmp_path / "fixtures").symlink_to(ROOT / "fixtures")
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "MOCKGLOT_URL": live.base_url}


def test_the_first_call_prints_the_frames_the_readme_shows(shell_env, tmp_path):
    (script,) = blocks("Quick start", "python")
    assert script.startswith("# first_call.py\n")
    (tmp_path / "first_call.py").write_text(script, encoding="utf-8")
    command = [sys.executable, "first_call.py", "fixtures/audio/de_order_change.ulaw"]
    done = subprocess.run(command, env=shell_env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (shown,) = blocks("Quick start", "json")
    # The same frames; at real-time pace (the README's server) audio.output comes later than at this server's
    # instant pace, so the order of turns' audio among the other frames differs.
    assert sorted(frame_lines(done.stdout)) == sorted(frame_lines(shown))
    assert len(shown.splitlines()) == 10


def frame_lines(output: str) -> list[str]:
    """Each printed frame, the session ID and the audio payload elided (IDs differ run to run)."""
    elided = re.sub(r"sess_[0-9A-Z]{26}", "sess_…", output)
    return [re.sub(r'"payload": "[^"]*"', '"payload": "…"', line) for line in elided.splitlines() if line.strip()]


def test_the_pytest_sections_examples_pass_as_a_users_test_files(pytester, monkeypatch):
    for name in ("MOCKGLOT_URL", "MOCKGLOT_CONTROL_TOKEN", "PYTEST_XDIST_WORKER"):
        monkeypatch.delenv(name, raising=False)
    files = {}
    for block in blocks("pytest plugin", "python"):
        name = re.match(r"# (test_\w+)\.py\n", block)
        assert name, f"each python example starts with its file name: {block[:60]!r}"
        files[name.group(1)] = block
    assert len(files) == 2
    pytester.makepyfile(**files)
    expected = sum(len(re.findall(r"^(?:async )?def test_", body, re.MULTILINE)) for body in files.values())
    run_pytest(pytester).assert_outcomes(passed=expected)


def test_the_cli_examples_run_and_print_what_the_readme_shows(shell_env, tmp_path):
    commands = [c for block in blocks("Command-line client", "sh") for c in shell_commands(block)]
    assert [c.split()[:2] for c in commands] == [["mockglot", "stream"]] * 2
    outputs = []
    for command in commands:
        done = subprocess.run(shlex.split(command), env=shell_env, cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        outputs.append(done.stdout)
    assert "final    agent #1" in outputs[1]
    shown = blocks("Command-line client", "text")[0]
    assert stable_lines(outputs[0]) == stable_lines(shown)


def stable_lines(output: str) -> list[str]:
    """The lines that must match exactly: IDs elided; audio counts and wall-clock durations vary by machine."""
    elided = re.sub(r"(sess|trn)_[0-9A-Z]{26}", r"\1_…", output)
    return [line for line in elided.splitlines() if line.strip() and not re.match(r"audio |session .* ended", line)]


def test_the_curl_walk_through_runs_against_a_server(shell_env, tmp_path):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    (script,) = blocks("The control plane", "sh")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], env=shell_env, cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[3:5] == ["503", "201"]  # the fault, then success
    journal = msgspec.json.decode(lines[5])["data"]
    assert [(r["status"], r["api_key"]) for r in journal] == [(503, "sk_test_…ugh1"), (201, "sk_test_…ugh1")]
    assert "sk_test_walkthrough1" not in lines[5]
    finals = next(msgspec.json.decode(line) for line in lines if line.startswith('{"session_id"'))["frames"]
    assert [(f["frame"]["text"], f["frame"]["translation"]["text"]) for f in finals] == [("Guten Tag", "Good day")]
    assert (tmp_path / "customer.wav").read_bytes() == _wav_of(ROOT / "fixtures/audio/ko_annyeonghaseyo.ulaw")


def _wav_of(path: Path) -> bytes:
    from mockglot.control.sessions import wav

    return wav(path.read_bytes(), mulaw=True)


def test_the_control_plane_table_lists_exactly_the_served_routes(live):
    document = httpx.get(f"{live.base_url}/_mockglot/openapi.json").json()
    served = {f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item}
    served |= {"GET /_mockglot/openapi.json", "GET /_mockglot/asyncapi.json"}
    table = re.findall(r"^\| `((?:GET|POST|DELETE|PUT|PATCH) /_mockglot[^`]*)` \|", section("The control plane"), re.M)
    assert len(table) == len(set(table))
    assert set(table) == served


def test_the_docker_commands_match_the_dockerfile_and_the_settings():
    dockerfile = parse_dockerfile((ROOT / "Dockerfile").read_text(encoding="utf-8"))
    build_args = {i.args.partition("=")[0] for i in dockerfile if i.keyword == "ARG"}
    exposed = {i.args for i in dockerfile if i.keyword == "EXPOSE"}
    settings = {field.name for field in msgspec.structs.fields(Settings)}
    built = set()
    for command in (c for block in blocks("Docker", "sh") for c in shell_commands(block)):
        words = shlex.split(command)
        if words[:2] == ["docker", "build"]:
            assert {w.split("=")[0] for w in _values(words, "--build-arg")} <= build_args
            built.add(_values(words, "-t")[0])
        elif words[:2] == ["docker", "run"]:
            assert words[-1] in built, f"{words[-1]} is built by an earlier command"
            assert {p.rsplit(":", 1)[1] for p in _values(words, "-p")} <= exposed
            for variable in _values(words, "-e"):
                assert variable.split("=")[0].removeprefix("MOCKGLOT_").lower() in settings, variable
            for volume in _values(words, "-v"):
                target = volume.split(":")[1]
                assert target == str(CONTAINER_MODEL_DIR) or target in " ".join(_values(words, "-e")), volume
    assert built == {"mockglot", "mockglot:vosk"}


def _values(words: list[str], flag: str) -> list[str]:
    return [words[i + 1] for i, word in enumerate(words[:-1]) if word == flag]
