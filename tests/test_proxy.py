"""`mockglot proxy`, `--record` and replay: a second mockglot as the upstream, real sockets both ways."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from mockglot.proxy import recording
from mockglot.proxy.app import ProxySettings, create_proxy_app
from mockglot.proxy.to_scenario import write as write_scenario
from mockglot.scenarios import load_file
from mockglot.settings import Settings
from mockglot.testing.client import Client, silence, utterance
from mockglot.testing.server import AppThread, ServerThread
from tests.conftest import new_key
from tests.ports import free_port

pytest_plugins = ["pytester"]

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
AUDIO = utterance() + utterance(900, 700)  # two turns of the default scenario


@pytest.fixture(scope="module")
def upstream() -> Iterator[ServerThread]:
    with ServerThread(Settings(port=0, output_pace="instant")) as running:
        yield running


@pytest.fixture
def proxied(upstream: ServerThread, tmp_path: Path) -> Iterator[AppThread]:
    settings = ProxySettings(upstream=upstream.base_url + "/v1", record=tmp_path / "recordings")
    with AppThread(create_proxy_app(settings)) as running:
        yield running


async def call(
    base_url: str, key: str, audio: bytes = AUDIO, **create: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One whole session: create, stream `audio` at full speed, end; the session and every frame received."""
    async with Client(base_url, key) as client:
        session = await client.create_session(source_language="de", target_language="en", **create)
        stream = await client.open_stream(session)
        await stream.send_audio("customer", audio)
        await stream.end()
        await client.end_session(session["id"])
        return session, stream.received


def essentials(frames: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Frames modulo ids: what a client's assertions look at."""
    return [
        (f["type"], f.get("turn"), f.get("speaker"), f.get("text"), f.get("translation"), f.get("confidence"),
         (f.get("audio") or {}).get("payload") if f["type"] == "audio.output" else None)
        for f in frames
        if f["type"] in ("transcript.partial", "transcript.final", "audio.output", "session.ended")
    ]  # fmt: skip


async def report(proxy: AppThread) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        return (await http.get(proxy.base_url + "/_mockglot/proxy/report")).json()


async def test_a_conforming_upstream_passes_through_unchanged(upstream, proxied, tmp_path):
    key = new_key()
    session, through_proxy = await call(proxied.base_url, key)
    # the client streams via the proxy
    assert session["stream"]["url"].startswith(proxied.base_url.replace("http", "ws"))
    _, direct = await call(upstream.base_url, new_key())
    assert essentials(through_proxy) == essentials(direct)
    found = await report(proxied)
    assert found["counts"] == {} and found["total"] == 0
    assert found["rest_calls"] == 2 and found["frames"] > 20
    assert found["added_latency_ms"]["rest"]["count"] == 2


async def test_a_recording_holds_every_frame_and_no_secret(proxied, tmp_path):
    key = new_key()
    session, frames = await call(proxied.base_url, key)
    folder = tmp_path / "recordings" / session["id"]
    loaded = recording.load(folder)
    assert loaded.recording.header.mode == "bidirectional_translation"
    assert loaded.recording.header.source_language == "de"
    assert loaded.client_audio("customer") == AUDIO  # byte for byte
    server_types = [f.type for f in loaded.recording.frames if f.direction == "server"]
    assert server_types == [f["type"] for f in frames]
    assert [r.method for r in loaded.recording.rest][:1] == ["POST"]
    everything = b"".join(p.read_bytes() for p in folder.iterdir())
    for secret in (key, session["stream"]["token"], b"Bearer", b"sk_test_", b"kst_"):
        assert (secret.encode() if isinstance(secret, str) else secret) not in everything


@pytest.fixture
def recorded(proxied, tmp_path) -> tuple[Path, dict[str, Any], list[dict[str, Any]]]:
    session, frames = asyncio.run(call(proxied.base_url, new_key()))
    return tmp_path / "recordings", session, frames


@pytest.mark.parametrize("speed", ["full", "realtime"])
def test_a_recording_replays_the_same_frames(recorded, speed):
    folder, session, frames = recorded
    with ServerThread(Settings(port=0, fixtures=[str(folder.parent)], output_pace="instant")) as replayer:

        async def replay() -> list[dict[str, Any]]:
            async with Client(replayer.base_url, new_key()) as client:
                replayed = await client.create_session(metadata={"mockglot_scenario": session["id"]})
                assert replayed["id"] != session["id"]
                stream = await client.open_stream(replayed)
                await stream.send_audio("customer", AUDIO, realtime=speed == "realtime")
                await stream.end()
                transcript = await client.transcript(replayed["id"])
                assert [t["text"] for t in transcript["turns"]] == [
                    f["text"] for f in frames if f["type"] == "transcript.final"
                ]
                return stream.received

        assert essentials(asyncio.run(replay())) == essentials(frames)


def test_replay_as_recorded_and_strict_matching(recorded):
    folder, session, frames = recorded
    with ServerThread(Settings(port=0, fixtures=[str(folder.parent)])) as replayer:

        async def replay(audio: bytes, **metadata: str) -> list[dict[str, Any]]:
            async with Client(replayer.base_url, new_key()) as client:
                meta = {"mockglot_scenario": session["id"], **metadata}
                replayed = await client.create_session(metadata=meta)
                stream = await client.open_stream(replayed)
                await stream.send_audio("customer", audio)
                await asyncio.sleep(0.5)
                await stream.end()
                return stream.received

        timed = asyncio.run(replay(AUDIO, mockglot_replay_pace="as_recorded", mockglot_replay_speed="50"))
        assert essentials(timed) == essentials(frames)
        other = silence(300) + AUDIO
        strict = asyncio.run(replay(other, mockglot_replay_match="strict"))
        errors = [f["error"] for f in strict if f["type"] == "session.error"]
        assert [e["code"] for e in errors] == ["replay_mismatch"]
        assert not [f for f in strict if f["type"] == "transcript.final"]
        lenient = asyncio.run(replay(other))
        assert [f["text"] for f in lenient if f["type"] == "transcript.final"] == [
            f["text"] for f in frames if f["type"] == "transcript.final"
        ]
        bad = asyncio.run(replay(AUDIO, mockglot_replay_speed="fast"))
        assert [f["error"]["param"] for f in bad if f["type"] == "session.error"] == ["metadata.mockglot_replay_speed"]


def test_a_recording_becomes_a_scenario_that_plays_the_same_texts(recorded, tmp_path):
    folder, session, frames = recorded
    path = write_scenario(recording.load(folder / session["id"]), tmp_path / "fixtures", "recorded-call")
    document = yaml.safe_load(path.read_text())
    finals = [f for f in frames if f["type"] == "transcript.final"]
    assert [t["text"] for t in document["turns"]["customer"]] == [f["text"] for f in finals]
    assert [t["translation"] for t in document["turns"]["customer"]] == [f["translation"]["text"] for f in finals]
    assert load_file(path).name == "recorded-call"
    with ServerThread(Settings(port=0, fixtures=[str(tmp_path / "fixtures")], output_pace="instant")) as scripted:
        _, played = asyncio.run(call(scripted.base_url, new_key(), metadata={"mockglot_scenario": "recorded-call"}))
    assert [f["text"] for f in played if f["type"] == "transcript.final"] == [f["text"] for f in finals]


async def test_drift_in_frames_is_reported_and_strict_mode_refuses_it(upstream, tmp_path):
    settings = ProxySettings(upstream=upstream.base_url)
    for strict in (False, True):
        settings.strict = strict
        with AppThread(create_proxy_app(settings)) as proxy:
            async with (
                Client(proxy.base_url, new_key()) as client,
                httpx.AsyncClient(base_url=upstream.base_url) as control,
            ):
                session = await client.create_session()
                stream = await client.open_stream(session)
                await stream.until("session.ready")
                inject = f"/_mockglot/sessions/{session['id']}/inject"
                extra = {"type": "pong", "surprise": 1}
                assert (await control.post(inject, json={"frame": extra})).status_code == 202
                unknown = {"type": "session.error", "error": {"type": "api_error", "code": "mystery", "message": "?",
                                                              "param": None}}  # fmt: skip
                assert (await control.post(inject, json={"frame": unknown})).status_code == 202
                await control.post(inject, json={"frame": {"type": "transcript.wobble"}})
                got = [await stream.recv() for _ in range(3)]
            found = await report(proxy)
        assert found["counts"] == {"unknown_error_code": 1, "unknown_field": 1, "unknown_frame_type": 1}
        assert {d["detail"] for d in found["differences"]} >= {"`surprise` is not in the contract"}
        if strict:
            assert [f["type"] for f in got] == ["session.error"] * 3
            assert all("--strict" in f["error"]["message"] for f in got)
        else:
            assert [f["type"] for f in got] == ["pong", "session.error", "transcript.wobble"]


async def test_an_unknown_error_code_on_rest_is_reported(tmp_path):
    async def odd(request):
        error = {"type": "api_error", "code": "teapot", "message": "no", "param": None, "request_id": "req_1"}
        return JSONResponse({"error": error}, status_code=418, headers={"X-Request-ID": "req_1"})

    with AppThread(Starlette(routes=[Route("/v1/sessions", odd, methods=["POST"])])) as odd_upstream:
        for strict in (False, True):
            report_file = tmp_path / f"{strict}.json"
            settings = ProxySettings(upstream=odd_upstream.base_url, strict=strict, report_file=report_file)
            with AppThread(create_proxy_app(settings)) as proxy:
                async with httpx.AsyncClient(base_url=proxy.base_url) as http:
                    answer = await http.post("/v1/sessions", json={"mode": "ai_agent", "source_langauge": "de"},
                                             headers={"Authorization": "Bearer " + new_key()})  # fmt: skip
            written = json.loads(settings.report_file.read_text())
            expected = {"unknown_field": 1} if strict else {"unknown_error_code": 1, "unknown_field": 1}
            assert written["counts"] == expected
            assert "source_langauge" in json.dumps(written["differences"])
            if strict:  # the misspelled field never reaches the upstream
                assert answer.status_code == 500 and "--strict" in answer.json()["error"]["message"]
            else:
                assert answer.status_code == 418 and answer.json()["error"]["code"] == "teapot"


async def test_an_upstream_that_is_down_is_a_503_envelope():
    port = free_port()
    with AppThread(create_proxy_app(ProxySettings(upstream=f"http://127.0.0.1:{port}"))) as proxy:
        async with httpx.AsyncClient(base_url=proxy.base_url) as http:
            answer = await http.post("/v1/sessions", json={"mode": "bidirectional_translation"})
        assert answer.status_code == 503
        error = answer.json()["error"]
        assert error["code"] == "service_unavailable" and answer.headers["retry-after"] == "1"
        assert str(port) in error["message"]


def test_a_broken_recording_is_refused_naming_the_file_and_field(recorded, tmp_path):
    folder, session, _ = recorded
    one = folder / session["id"]
    (one / "customer.ulaw").unlink()
    with pytest.raises(recording.RecordingError, match=r"recording\.json: frames\[\d+\]\.audio\.file: missing"):
        recording.load(one)
    (one / "recording.json").write_text(json.dumps({"header": {"version": 99}}))
    with pytest.raises(recording.RecordingError, match="header"):
        recording.load(one)
    data = json.loads((one / "recording.json").read_text())
    (one / "recording.json").write_text("{not json")
    with pytest.raises(recording.RecordingError, match="does not parse"):
        recording.load(one)
    assert data
    with pytest.raises(ValueError, match="does not parse"):
        ServerThread(Settings(port=0, fixtures=[str(folder.parent)]))


def test_the_marker_replays_a_recording_in_a_users_test(recorded, pytester, monkeypatch):
    """A user keeps a recording beside their tests and names it like a scenario."""
    folder, session, frames = recorded
    fixtures = pytester.path / "fixtures"
    shutil.copytree(folder / session["id"], fixtures / "recordings" / "recorded-call")
    (pytester.path / "call.ulaw").write_bytes(AUDIO)
    for name in ("MOCKGLOT_URL", "MOCKGLOT_CONTROL_TOKEN", "PYTEST_XDIST_WORKER", "PYTEST_ADDOPTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MOCKGLOT_FIXTURES", str(fixtures))
    finals = [f["text"] for f in frames if f["type"] == "transcript.final"]
    pytester.makepyfile(
        test_replayed=f"""
        import asyncio
        from pathlib import Path

        import pytest

        from mockglot.testing.client import Client


        @pytest.mark.mockglot_scenario("recorded-call")
        def test_the_recorded_call(mockglot):
            async def call():
                async with Client(mockglot.base_url, mockglot.api_key) as client:
                    stream = await client.open_stream(await client.create_session())
                    await stream.send_audio("customer", Path("call.ulaw").read_bytes())
                    await stream.end()
                    return [f["text"] for f in stream.received if f["type"] == "transcript.final"]

            assert asyncio.run(call()) == {finals!r}
        """
    )
    plugins = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:schemathesis")
    result = pytester.runpytest_subprocess(*plugins)
    result.assert_outcomes(passed=1)


def test_the_commands(upstream, tmp_path):
    """`mockglot proxy --record` in front of a server, then `mockglot scenario from-recording`, as a user runs them."""
    records, report_file = tmp_path / "rec", tmp_path / "report.json"
    command = [sys.executable, "-m", "mockglot", "proxy", "--upstream", upstream.base_url, "--port", "0",
               "--record", str(records), "--report", str(report_file)]  # fmt: skip
    proxy = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        banner = proxy.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", banner)[0]
        session, frames = asyncio.run(call(url, new_key()))
    finally:
        proxy.send_signal(signal.SIGINT)
        proxy.wait(20)
    assert json.loads(report_file.read_text())["total"] == 0
    out = tmp_path / "scenario"
    made = subprocess.run(
        [sys.executable, "-m", "mockglot", "scenario", "from-recording", str(records / session["id"]), "-o", str(out)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    document = yaml.safe_load(Path(made.stdout.strip()).read_text())
    assert document["name"] == session["id"]
    assert [t["text"] for t in document["turns"]["customer"]] == [
        f["text"] for f in frames if f["type"] == "transcript.final"
    ]
    broken = subprocess.run(
        [sys.executable, "-m", "mockglot", "scenario", "from-recording", str(tmp_path / "nowhere")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert broken.returncode == 2 and "cannot read recording" in broken.stderr and "Traceback" not in broken.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--name", "calls/refund"], "'calls/refund' cannot name a scenario: 1 to 64 letters, digits, `_`, `.` or `-`, "
         "starting with a letter or digit"),
        (["--name", "the refund"], "'the refund' cannot name a scenario: "),
        (["-o", "{tmp}/file/out"], "cannot write the scenario into {tmp}/file/out: Not a directory"),
    ],
)  # fmt: skip
def test_from_recording_refuses_a_name_no_scenario_can_have(recorded, tmp_path, capsys, flags, message):
    """`--name calls/refund` or an unwritable `-o` was a traceback; `--name "the refund"` wrote a scenario that
    stopped `mockglot serve --fixtures` from starting."""
    from mockglot.cli import main

    folder, session, _ = recorded
    (tmp_path / "file").write_text("")
    argv = ["scenario", "from-recording", str(folder / session["id"]), "-o", str(tmp_path / "out")]
    assert main([*argv, *[f.format(tmp=tmp_path) for f in flags]]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"mockglot scenario: {message.format(tmp=tmp_path)}")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--upstream", "http://"], "--upstream must be an http:// or https:// URL with a host, not 'http://'"),
        (["--upstream", "localhost:8080"], "--upstream must be an http:// or https:// URL with a host, not "
         "'localhost:8080'"),
        (["--port", "99999"], "--port 99999: expected a port number from 0 to 65535"),
        (["--record", "{tmp}/file/rec"], "--record: cannot create {tmp}/file/rec: Not a directory"),
        (["--report", "{tmp}/file/report.json"], "--report: cannot create {tmp}/file: File exists"),
    ],
)  # fmt: skip
def test_proxy_flags_that_cannot_work_are_one_line_before_it_listens(tmp_path, capsys, flags, message):
    """A port out of range was a traceback; an upstream without a host made every call a 503, and a record or
    report folder that cannot be written lost each recording (or the report at exit) to the log."""
    from mockglot.cli import main

    (tmp_path / "file").write_text("")
    argv = ["proxy", "--upstream", "http://127.0.0.1:9", *[f.format(tmp=tmp_path) for f in flags]]
    assert main(argv) == 2
    assert capsys.readouterr() == ("", f"mockglot proxy: {message.format(tmp=tmp_path)}\n")


def test_the_readme_commands_are_the_real_ones():
    from mockglot.cli import build_parser

    section = README.split("## Record, replay and the validating proxy", 1)[1].split("\n## ", 1)[0]
    commands = [line.split("#")[0].split() for line in section.splitlines() if line.startswith("mockglot ")]
    assert [c[1] for c in commands] == ["proxy", "serve", "scenario"]
    for command in commands:
        build_parser().parse_args(command[1:])  # exits (a failed test) on any flag the CLI does not have
    for name in ("mockglot_replay_pace", "mockglot_replay_match", "mockglot_replay_speed", "replay_mismatch"):
        assert name in section


async def test_an_oversized_body_is_refused_before_it_is_forwarded(proxied):
    async with httpx.AsyncClient(base_url=proxied.base_url) as http:
        answer = await http.post("/v1/sessions", content=b"{" + b" " * (1024 * 1024) + b"}",
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "request_too_large"
    assert (await report(proxied))["rest_calls"] == 0  # nothing was checked or sent upstream


async def test_odd_paths_are_forwarded_as_sent_and_record_nothing(upstream, proxied, tmp_path):
    """The proxy forwarded the decoded path: `%00` made no URL (a 500 and a traceback), `%2E%2E` became `..`, and
    the recording of that "session" was written to `--record DIR/..`. Every path that names no session the
    upstream knows made a recording folder."""
    key = new_key()
    async with httpx.AsyncClient(base_url=proxied.base_url, headers={"Authorization": f"Bearer {key}"}) as http:
        for path in ("/v1/sessions/%00", "/v1/sessions/a%3Fb", "/v1/sessions/%E2%82%AC", "/v1/sessions/nope"):
            answer = await http.get(path)
            direct = httpx.get(upstream.base_url + path, headers={"Authorization": f"Bearer {key}"})
            assert answer.status_code == direct.status_code == 404, (path, answer.text)
            assert answer.json()["error"]["message"] == direct.json()["error"]["message"]
        answer = await http.post("/v1/sessions/%2E%2E/end")
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "session_not_found"
    async with Client(proxied.base_url, key) as client:  # a stream to a session the upstream does not know
        stream = await client.open_stream({"id": "sess_nope", "stream": {"url": f"{proxied.ws_url}/v1/sessions/"
                                           "sess_nope/connect", "token": "kst_test_nope0000"}})  # fmt: skip
        await stream.drain()
        assert stream.close_code == 4004
    assert not (tmp_path / "recording.json").exists()
    assert not (tmp_path / "recordings").exists() or list((tmp_path / "recordings").iterdir()) == []


async def test_a_recording_of_an_auto_detected_session_keeps_the_languages_the_stream_chose(proxied, tmp_path):
    """The header took the languages from the create's answer (null when auto-detected), so the replay's
    `session.ready` said null where the recorded one said `de` and `en`."""
    async with Client(proxied.base_url, new_key()) as client:
        session = await client.create_session()
        stream = await client.open_stream(session)
        await stream.send_audio("customer", AUDIO)
        await stream.end()
    ready = next(f for f in stream.received if f["type"] == "session.ready")
    header = recording.load(tmp_path / "recordings" / session["id"]).recording.header
    assert (header.source_language, header.target_language) == (ready["source_language"], ready["target_language"])
    assert (header.source_language, header.target_language) == ("de", "en")


@pytest.mark.parametrize(("status", "code", "close"), [(401, "invalid_token", 4001), (404, "session_not_found", 4004),
                                                       (503, "service_unavailable", 1011)])  # fmt: skip
async def test_a_stream_handshake_the_upstream_refuses_is_told_as_what_it_is(status, code, close):
    """Every refused handshake was `service_unavailable`, close 1011, "try again": a bad token or an unknown
    session sent the client into retries that cannot succeed."""

    async def refuse(websocket):
        await websocket.send_denial_response(JSONResponse({"error": "no"}, status_code=status))

    upstream = Starlette(routes=[WebSocketRoute("/v1/sessions/{session_id}/connect", refuse)])
    with AppThread(upstream) as refusing, AppThread(create_proxy_app(ProxySettings(refusing.base_url))) as proxy:
        async with Client(proxy.base_url, new_key()) as client:
            url = f"{proxy.ws_url}/v1/sessions/sess_refused/connect"
            stream = await client.open_stream({"stream": {"url": url, "token": "kst_test_refused00"}})
            frames = await stream.drain()
        found = await report(proxy)
    assert [f["error"]["code"] for f in frames] == [code] and stream.close_code == close
    assert found["counts"] == ({"upstream_unavailable": 1} if status == 503 else {"unexpected_status": 1})


async def released(proxy: AppThread) -> None:
    """Until the proxy holds no recording in memory (it lets one go once the stream's close has passed)."""
    for _ in range(1000):
        if not proxy.app.state.proxy.recorders:  # type: ignore[attr-defined]
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the proxy still holds {list(proxy.app.state.proxy.recorders)}")  # type: ignore[attr-defined]


def recorded_whole(tmp_path: Path, session_id: str, audio: bytes) -> Any:
    """The session's recording, holding all of its two-turn call: the audio, the create, a GET and the end, and
    both finals."""
    loaded = recording.load(tmp_path / "recordings" / session_id)
    assert loaded.client_audio("customer") == audio
    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in loaded.recording.rest] == [
        ("POST", "sessions"), ("GET", session_id), ("POST", "end")]  # fmt: skip
    finals = [f.frame["text"] for f in loaded.recording.frames if f.type == "transcript.final"]
    assert finals == ["Ich möchte meine Bestellung ändern", "Meine Bestellnummer ist 12345"]
    return loaded


async def test_a_finished_recording_leaves_memory_and_a_reconnect_adds_to_it(proxied, tmp_path):
    """Each recording stayed in memory with all its audio until 1,000 later sessions pushed it out (gigabytes on a
    proxy left running); now it is let go once written, and what comes later is added to the file, not over it."""
    first, second = utterance(), utterance(900, 700)
    async with Client(proxied.base_url, new_key()) as client:
        session = await client.create_session(source_language="de", target_language="en")
        stream = await client.open_stream(session)
        await stream.send_audio("customer", first)
        await stream.until("transcript.final")  # the first turn has passed the proxy
        await stream.ws.close()  # a dropped connection; the session lives on
        await released(proxied)
        again = await client.open_stream(await client.get_session(session["id"]))  # a fresh token
        again.sequences, again.sent_ms = stream.sequences, stream.sent_ms  # a reconnect goes on counting
        await again.send_audio("customer", second)
        await again.end()
        await client.end_session(session["id"])
        await released(proxied)
    loaded = recorded_whole(tmp_path, session["id"], first + second)
    at = [f.at_ms for f in loaded.recording.frames]
    assert at == sorted(at)


async def test_a_recording_pushed_out_of_memory_while_it_streams_keeps_all_it_records(proxied, tmp_path, monkeypatch):
    """Past the bound of recordings held at once, the oldest went to disk even while its stream was open: a REST
    call then read the file back and wrote that copy over what the stream recorded after."""
    from mockglot.proxy import app as proxy_app

    monkeypatch.setattr(proxy_app, "MAX_OPEN_RECORDINGS", 1)
    first, second = utterance(), utterance(900, 700)
    async with Client(proxied.base_url, new_key()) as client:
        session = await client.create_session(source_language="de", target_language="en")
        stream = await client.open_stream(session)
        await stream.send_audio("customer", first)
        await stream.until("transcript.final")
        await client.create_session(source_language="de", target_language="en")  # one recording too many
        await client.get_session(session["id"])
        await stream.send_audio("customer", second)
        await stream.end()
        await client.end_session(session["id"])
        await released(proxied)
    recorded_whole(tmp_path, session["id"], first + second)


async def test_an_upstream_frame_past_16_mib_closes_the_stream_instead_of_filling_memory():
    """The proxy read the upstream's frames without a size limit: one misbehaving upstream frame could take all
    the memory there is."""

    async def flood(websocket):
        await websocket.accept()
        await websocket.send_text("x" * (17 * 1024 * 1024))
        await websocket.receive()

    upstream = Starlette(routes=[WebSocketRoute("/v1/sessions/{session_id}/connect", flood)])
    with AppThread(upstream) as flooding, AppThread(create_proxy_app(ProxySettings(flooding.base_url))) as proxy:
        async with Client(proxy.base_url, new_key()) as client:
            url = f"{proxy.ws_url}/v1/sessions/sess_flood/connect"
            stream = await client.open_stream({"stream": {"url": url, "token": "kst_test_flood0000"}})
            assert await stream.drain() == []
    assert stream.close_code == 1009


async def test_a_refused_connect_passes_a_strict_proxy_as_the_upstream_sent_it(upstream):
    """A connect the upstream refuses as documented (`session.error`, then 4001) was reported as `ordering` (the
    first frame not `session.ready`), so a `--strict` proxy swapped the client's invalid_token for its own error."""
    with AppThread(create_proxy_app(ProxySettings(upstream.base_url, strict=True))) as proxy:
        async with Client(proxy.base_url, new_key()) as client:
            session = await client.create_session()
            stream = await client.open_stream(session, token="kst_test_wrongtoken0")
            frames = await stream.drain()
        found = await report(proxy)
    assert [f["error"]["code"] for f in frames] == ["invalid_token"] and stream.close_code == 4001
    assert found["counts"] == {}
