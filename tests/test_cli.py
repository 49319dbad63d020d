"""`mockglot` itself as a newcomer meets it: the version, the banner's links (each one answers), usage errors
from the subcommand that was meant, and settings errors that name the variable, the value and the choices."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import httpx
import pytest

from mockglot import __version__
from mockglot.cli import main
from mockglot.settings import from_env
from tests.test_cli_stream import GERMAN_CALL

SEEDS = f"{-(2**63)} to {2**63 - 1}"  # what POST /_mockglot/seed takes


def test_version(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out == f"mockglot {__version__}\n"


def test_an_unknown_serve_flag_shows_serves_usage(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--bogus"])
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert err.startswith("usage: mockglot serve") and "mockglot serve: error: unrecognized arguments: --bogus" in err


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"MOCKGLOT_PORT": "abc"}, "invalid setting MOCKGLOT_PORT='abc': expected a whole number"),
        ({"MOCKGLOT_PORT": "70000"}, "invalid setting MOCKGLOT_PORT='70000': expected a port number from 0 to 65535"),
        ({"MOCKGLOT_ENGINE": "whisper"}, "invalid setting MOCKGLOT_ENGINE='whisper': expected one of scripted, vosk"),
        ({"MOCKGLOT_LOG_FORMAT": "xml"}, "invalid setting MOCKGLOT_LOG_FORMAT='xml': expected one of text, json"),
        ({"MOCKGLOT_SEED": "1.5"}, f"invalid setting MOCKGLOT_SEED='1.5': expected a whole number from {SEEDS}"),
        (
            {"MOCKGLOT_SEED": str(2**64)},
            f"invalid setting MOCKGLOT_SEED='{2**64}': expected a whole number from {SEEDS}",
        ),
    ],
)
def test_a_bad_environment_value_names_the_variable_the_value_and_the_choices(environ, message):
    with pytest.raises(ValueError) as raised:
        from_env(environ)
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"rate_limit": 0}, "invalid setting --rate-limit 0: expected a whole number from 1 to 1000000"),
        ({"rate_limit": -1}, "invalid setting --rate-limit -1: expected a whole number from 1 to 1000000"),
        ({"max_connections": 0}, "invalid setting --max-connections 0: expected a whole number from 1 to 1000000"),
        ({"header_timeout": 0.0}, "invalid setting --header-timeout 0.0: expected a number above 0 and at most 3600"),
    ],
)
def test_a_number_that_would_break_the_server_is_refused_at_start(flags, message):
    """`--rate-limit 0` used to answer every request 429, `--header-timeout 0` to drop every connection and
    `--max-connections 0` to be ignored: each is now refused, naming the flag and the range."""
    with pytest.raises(ValueError) as raised:
        from_env({}, **flags)
    assert str(raised.value) == message


@pytest.mark.parametrize("token", ["", " ", "two words", "pässwort"])
def test_a_control_token_that_cannot_protect_is_refused_without_showing_it(token):
    """`--control-token ""` (an unset shell variable) left the control plane open to every request, while the
    inspector asked for a token nobody could type; a token with spaces or beyond ASCII could never be presented."""
    with pytest.raises(ValueError) as raised:
        from_env({}, control_token=token)
    assert str(raised.value).startswith("invalid setting --control-token: a control token is one or more visible ")
    with pytest.raises(ValueError, match=r"^invalid setting MOCKGLOT_CONTROL_TOKEN: ") as raised:
        from_env({"MOCKGLOT_CONTROL_TOKEN": f"hunter2 {token}"})
    assert "hunter2" not in str(raised.value)  # a secret, even a broken one, is not printed


def test_an_optional_numeric_variable_names_its_range():
    with pytest.raises(ValueError) as raised:
        from_env({"MOCKGLOT_MAX_CONNECTIONS": "lots"})
    expected = "invalid setting MOCKGLOT_MAX_CONNECTIONS='lots': expected a whole number from 1 to 1000000"
    assert str(raised.value) == expected
    assert from_env({"MOCKGLOT_RATE_LIMIT": "60"}).rate_limit == 60


def test_flags_beat_the_environment_and_are_named_when_bad():
    assert from_env({"MOCKGLOT_PORT": "9000"}, port=9001).port == 9001
    assert from_env({"MOCKGLOT_PORT": "9000"}).port == 9000
    with pytest.raises(ValueError, match=r"invalid setting --output-pace 'slow': expected one of realtime, instant"):
        from_env({}, output_pace="slow")


def test_serve_reports_a_bad_variable_in_one_line():
    done = subprocess.run(
        [sys.executable, "-m", "mockglot", "serve"],
        env={"MOCKGLOT_PORT": "abc", "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stderr) == (
        2,
        "mockglot: invalid setting MOCKGLOT_PORT='abc': expected a whole number\n",
    )


@pytest.fixture
def served(tmp_path):
    """`mockglot serve` on a free port: the process and its banner."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path), "MOCKGLOT_OUTPUT_PACE": "instant"}
    process = subprocess.Popen(
        [sys.executable, "-m", "mockglot", "serve", "--port", "0"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        lines = []
        while not lines or not lines[-1].lstrip().startswith("mockglot stream"):
            line = process.stdout.readline()  # type: ignore[union-attr]
            assert line, f"the banner ended early: {lines}"
            lines.append(line.rstrip("\n"))
        yield process, "\n".join(lines)
    finally:
        process.terminate()
        process.wait(30)


def test_the_banners_links_answer_and_its_commands_work(served, tmp_path):
    _, banner = served
    base = re.search(r"at (http://localhost:\d+)  ", banner).group(1)
    assert f"{base}/v1" not in banner.splitlines()[0]  # the base URL, not a path that answers 404
    for url in re.findall(r"http://localhost:\d+/\S+", banner):
        if "/v1/" not in url:
            assert httpx.get(url).status_code == 200, url
    assert httpx.get(f"{base}/_mockglot/openapi.json").json()["paths"]

    curl = next(line for line in banner.splitlines() if line.lstrip().startswith("curl"))
    if subprocess.run(["which", "curl"], capture_output=True).returncode == 0:
        created = subprocess.run(shlex.split(curl), capture_output=True, text=True, timeout=30)
        assert '"status":"created"' in created.stdout.replace(" ", "")

    stream = next(line for line in banner.splitlines() if line.lstrip().startswith("mockglot stream"))
    words = shlex.split(stream.split("#")[0])
    words[2] = str(GERMAN_CALL)  # the banner names the checkout's file relative to the checkout
    assert main([*words[1:], "--speed", "full"]) == 0


def test_stream_takes_the_api_url_with_its_v1(mockglot, capsys):
    assert main(["stream", str(GERMAN_CALL), "--speed", "full", "--url", f"{mockglot.base_url}/v1/",
                 "--api-key", mockglot.api_key]) == 0  # fmt: skip
    assert "final    customer #1  Ich möchte meine Bestellung ändern" in capsys.readouterr().out


def test_get_v1_404_points_to_the_routes(mockglot):
    response = httpx.get(f"{mockglot.base_url}/v1", headers=mockglot.headers)
    assert response.status_code == 404
    message = response.json()["error"]["message"]
    assert "lives under /v1" not in message and "/openapi.json" in message
