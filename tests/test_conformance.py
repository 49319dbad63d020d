"""`mockglot conform`: the conformance suite passes against mockglot (in-process and as a `mockglot serve`
process), and each kind of check fails against a server that breaks its rule."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mockglot.conformance import CHECKS, Report
from mockglot.conformance import checks as _registered  # noqa: F401  (CHECKS is filled when the checks load)
from mockglot.conformance.runner import run_checks
from mockglot.settings import Settings
from mockglot.testing.server import ServerThread

KEY = "sk_test_conformance1"


def failures(report: Report) -> dict[str, str]:
    return {r.id: r.reason for r in report.results if r.status == "FAIL"}


def run(url: str, **options: Any) -> Report:
    return asyncio.run(run_checks(url, KEY, **options))


def test_every_check_passes_against_the_in_process_server(live):
    report = run(live.base_url)
    assert report.control_plane
    assert failures(report) == {}
    assert report.ok
    assert {r.id for r in report.results} == {c.id for c in CHECKS}
    assert [r.id for r in report.results if r.status == "SKIP"] == []
    assert {c.source for c in CHECKS} == {"seed", "documented", "emulator"}


def test_the_command_passes_against_a_mockglot_serve_process(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOCKGLOT_")}
    serve = subprocess.Popen(
        [sys.executable, "-m", "mockglot", "serve", "--port", "0"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        banner = serve.stdout.readline()  # type: ignore[union-attr]
        url = re.search(r"at (http://[^/\s]+)", banner)
        assert url, banner
        done = subprocess.run(
            [sys.executable, "-m", "mockglot", "conform", url[1], "--api-key", KEY, "--json"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        serve.terminate()
        serve.wait(30)
    report = json.loads(done.stdout)
    failed = {c["id"]: c["reason"] for c in report["checks"] if c["status"] == "FAIL"}
    assert failed == {}
    assert report["control_plane"] is True and report["summary"] == {"PASS": len(CHECKS), "FAIL": 0, "SKIP": 0}
    assert report["ok"] and done.returncode == 0


def test_lines_and_exit_status(live, capsys):
    from mockglot.cli import main

    status = main(["conform", live.base_url, "--api-key", KEY, "--check", "auth.", "--check", "stream.ping"])
    lines = capsys.readouterr().out.splitlines()
    assert status == 0
    assert lines[0].split()[:3] == ["PASS", "documented", "auth.missing"]
    assert all(re.match(r"^(PASS|FAIL|SKIP)  (seed|documented|emulator) ", line) for line in lines[:-1])
    assert re.match(r"^\d+ checks: \d+ passed, 0 failed, 0 skipped in [\d.]+ s against http://", lines[-1])


def test_the_api_url_with_its_v1_is_the_same_server(live, capsys):
    from mockglot.cli import main

    assert main(["conform", f"{live.base_url}/v1/", "--api-key", KEY, "--check", "sessions.create"]) == 0
    assert capsys.readouterr().out.startswith("PASS  seed        sessions.create")


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["http://127.0.0.1:9"], 1, "mockglot conform: cannot reach http://127.0.0.1:9: "),
        (["localhost:8080"], 2, "mockglot conform: the URL must start with http:// or https://, not 'localhost:8080'"),
    ],
)  # fmt: skip
def test_a_server_it_cannot_use_is_one_line_not_25_failures(capsys, argv, status, message):
    """An unreachable server or a URL without its scheme failed each check with the same connection error."""
    from mockglot.cli import main

    assert main(["conform", *argv, "--api-key", KEY]) == status
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(message) and err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "status", "error"),
    [
        (["http://127.0.0.1:9"], 1, "cannot reach http://127.0.0.1:9: "),
        (["localhost:8080"], 2, "the URL must start with http:// or https://"),
    ],
)  # fmt: skip
def test_with_json_a_server_it_cannot_use_is_still_a_json_document(capsys, argv, status, error):
    """`--json` printed nothing on stdout when the server was unreachable: a script parsing it got no document."""
    from mockglot.cli import main

    assert main(["conform", *argv, "--api-key", KEY, "--json"]) == status
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["ok"] is False and report["checks"] == [] and report["exit_code"] == status
    assert report["error"].startswith(error) and err.startswith(f"mockglot conform: {error}")


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["http://127.0.0.1:9", "--json"], "the following arguments are required: --api-key"),
        (["http://x", "--api-key", KEY, "--json", "--chekc", "auth."], "unrecognized arguments: --chekc auth."),
    ],
)  # fmt: skip
def test_with_json_a_usage_error_is_still_a_json_document(capsys, argv, error):
    """A missing `--api-key` or a misspelt flag printed argparse's usage only: with `--json`, stdout was empty."""
    from mockglot.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["conform", *argv])
    out, err = capsys.readouterr()
    assert exited.value.code == 2
    assert json.loads(out) == {"url": None, "ok": False, "error": error, "exit_code": 2, "checks": []}
    assert err.rstrip().endswith(f"mockglot conform: error: {error}")


def test_a_check_prefix_that_names_no_check_is_refused_not_a_pass(live):
    """A typo in `--check` ran nothing and exited 0: a CI step that passed and checked nothing."""
    done = subprocess.run(
        [sys.executable, "-m", "mockglot", "conform", live.base_url, "--api-key", KEY, "--check", "stream.",
         "--check", "sesions."],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("mockglot conform: no check id starts with 'sesions.'; the checks are auth., ")
    assert done.stderr.rstrip().endswith(" webhooks.")


# --- a server that breaks one rule makes that check fail ------------------------------------------------------


class Breaking:
    """ASGI middleware around mockglot that breaks the contract one way (bodies keep their length)."""

    def __init__(self, app: ASGIApp, how: str) -> None:
        self.app = app
        self.how = how
        self.state = app.state  # type: ignore[attr-defined]  (the server's wiring reads the app's state)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.how == "no_control_plane" and scope["path"].startswith("/_mockglot"):
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"not here"})
            return

        async def broken(message: Message) -> None:
            if self.how == "no_request_id" and message["type"] == "http.response.start":
                message = {**message, "headers": [h for h in message["headers"] if h[0] != b"x-request-id"]}
            if self.how == "wrong_code" and message["type"] == "http.response.body":
                message = {**message, "body": message["body"].replace(b'"session_not_found"', b'"session_gone_away"')}
            if self.how == "call_missing" and message["type"] == "http.response.body":
                message = {**message, "body": message["body"].replace(b'"call":null,', b'"cal_":null,')}
            if self.how == "ready_not_first" and '"session.ready"' in message.get("text", ""):
                await send({"type": "websocket.send", "text": '{"type": "pong", "session_id": "sess_x"}'})
            if self.how == "wrong_listener" and '"audio.output"' in message.get("text", ""):
                message = {**message, "text": message["text"].replace('"listener":"agent"', '"listener":"guest"')}
            if self.how == "close_on_bad_frame" and '"invalid_message"' in message.get("text", ""):
                await send({"type": "websocket.close", "code": 1011})
                return
            if self.how == "audio_before_final" and message["type"] == "websocket.send":
                text = message.get("text", "")
                if '"transcript.final"' in text:
                    held.append(message)
                    return
                if held and '"session.ended"' in text:
                    for message_ in held:
                        await send(message_)
            await send(message)

        held: list[Message] = []
        await self.app(scope, receive, broken)


BREAKS = [
    ("no_request_id", ["auth.missing", "sessions.retrieve"], "X-Request-ID is"),
    ("wrong_code", ["sessions.not_found"], "error.code is 'session_gone_away'"),
    ("call_missing", ["sessions.create"], "the session lacks ['call']"),
    ("ready_not_first", ["stream.ready_first"], "the first frame is pong, expected session.ready"),
    ("close_on_bad_frame", ["stream.bad_frames"], "closed (1011)"),
    ("audio_before_final", ["stream.turn_order"], "before its final"),
    ("wrong_listener", ["stream.frame_fields"], "goes customer -> guest"),
]


@pytest.mark.parametrize(("how", "checks", "reason"), BREAKS, ids=[b[0] for b in BREAKS])
def test_a_check_fails_against_a_server_that_breaks_its_rule(how, checks, reason):
    thread = ServerThread(Settings(port=0, output_pace="instant"))
    thread.app = Breaking(thread.app, how)  # type: ignore[assignment]
    with thread:
        report = run(thread.base_url, select=lambda c: c.id in checks)
    assert {r.id: r.status for r in report.results} == dict.fromkeys(checks, "FAIL")
    assert all(reason in r.reason for r in report.results), [r.reason for r in report.results]
    assert not report.ok


def test_without_a_control_plane_only_documented_checks_run():
    thread = ServerThread(Settings(port=0, output_pace="instant"))
    thread.app = Breaking(thread.app, "no_control_plane")  # type: ignore[assignment]
    with thread:
        report = run(thread.base_url, select=lambda c: c.id.startswith(("auth.", "stream.connect_bad", "usage.")))
    statuses = {r.id: (r.status, r.source) for r in report.results}
    assert not report.control_plane and report.sources == ["seed", "documented"]
    assert statuses["auth.missing"] == ("PASS", "documented")
    assert statuses["stream.connect_bad_token"] == ("SKIP", "emulator")
    assert statuses["usage.credits"] == ("SKIP", "documented")  # needs the control plane to arrange
    assert report.ok


def test_no_webhook_delivery_at_all_says_how_a_server_elsewhere_reaches_the_receiver():
    """Against a container, `webhooks.signed` failed with "0 of 2 deliveries arrived" and no word of why (the
    container cannot reach the receiver on this machine's loopback) or of `--receiver-host`."""
    from mockglot.conformance.receiver import Receiver
    from mockglot.conformance.runner import Failed

    async def wait() -> str:
        async with Receiver() as receiver:
            with pytest.raises(Failed) as failed:
                await receiver.wait(2, 0.05)
        return str(failed.value)

    message = asyncio.run(wait())
    assert message.startswith("0 of 2 webhook deliveries arrived within 0.05 s at http://127.0.0.1:")
    assert "none did: can the server reach this machine at that address?" in message and "--receiver-host" in message
