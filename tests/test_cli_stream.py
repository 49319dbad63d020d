"""`mockglot stream FILE`: what a user sees on the terminal and what the server received, for each kind of file,
and one clean line with the right exit code for each kind of failure."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import wave
from pathlib import Path

import pytest

from mockglot.cli import main
from mockglot.control.sessions import wav as mulaw_wav
from mockglot.settings import Settings
from mockglot.speech import codec
from mockglot.stream_cli import parse_wav
from mockglot.testing.client import checked, silence, tone, utterance
from mockglot.testing.server import ServerThread

ROOT = Path(__file__).resolve().parents[1]
GERMAN_CALL = ROOT / "fixtures" / "audio" / "de_order_change.ulaw"


def stream(mockglot, *args: str) -> int:
    return main(["stream", *args, "--url", mockglot.base_url, "--api-key", mockglot.api_key])


def write_pcm_wav(path: Path, pcm: bytes, rate: int, channels: int = 1, width: int = 2) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(pcm)
    return path


def with_rate(path: Path, rate: int) -> Path:
    """The WAV file at `path` claiming `rate` samples a second (a broken or hand-made header)."""
    content = bytearray(path.read_bytes())
    content[24:28] = rate.to_bytes(4, "little")  # the fmt chunk's sample rate, in a canonical header
    path.write_bytes(content)
    return path


def test_streams_a_ulaw_file_prints_events_then_the_transcript(mockglot, capsys):
    assert stream(mockglot, str(GERMAN_CALL), "--speed", "full") == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    finals = [line for line in lines if line.startswith("final")]
    assert finals == [
        "final    customer #1  Ich möchte meine Bestellung ändern  => [en] I want to change my order  "
        "(0.96, 0.0-1.6 s)",
        "final    customer #2  Meine Bestellnummer ist 12345  => [en] My order number is 12345  (0.93, 2.6-6.3 s)",
    ]
    assert any(line.startswith("partial  customer #1  Ich möchte") for line in lines)
    assert any(line.startswith("audio    #1 -> agent") and "audio.output frames" in line for line in lines)
    assert "ended    reason explicit_end" in lines
    assert out.endswith(
        "  [customer] Ich möchte meine Bestellung ändern\n      [en] I want to change my order\n"
        "  [customer] Meine Bestellnummer ist 12345\n      [en] My order number is 12345\n"
    )
    (session,) = mockglot.sessions()
    assert (session["status"], session["end_reason"]) == ("ended", "explicit_end")
    received = parse_wav(mockglot.received_audio(session["id"], "customer")).data
    assert received == GERMAN_CALL.read_bytes()  # the file, every byte, once


def test_audio_frames_are_counted_per_turn_and_listener(mockglot, capsys):
    assert stream(mockglot, str(GERMAN_CALL), "--speed", "full") == 0
    counted = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("audio")]
    (session,) = mockglot.sessions()
    sent = mockglot.frames(session["id"], type="audio.output")
    totals: dict[tuple[str, str], int] = {}
    for words in counted:  # audio #1 -> agent 17 audio.output frames[, 17 so far]
        totals[(words[1], words[3])] = totals.get((words[1], words[3]), 0) + int(words[4])
    expected: dict[tuple[str, str], int] = {}
    for frame in sent:
        key = (f"#{frame['turn']}", frame["listener"])
        expected[key] = expected.get(key, 0) + 1
    assert totals == expected and sum(totals.values()) == len(sent) > 0


def test_at_real_time_each_turns_audio_count_is_printed_once_when_that_audio_ends(capsys):
    """Output paced like a call: turn 1's audio (1.7 s) ends seconds before turn 2's final; its line comes then,
    once, not split by the partials that arrive meanwhile and not held back until the next event."""
    with ServerThread(Settings(port=0, output_pace="realtime")) as server:
        assert main(["stream", str(GERMAN_CALL), "--url", server.base_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    audio = [line for line in lines if line.startswith("audio")]
    assert [line.split()[1:4] for line in audio] == [["#1", "->", "agent"], ["#2", "->", "agent"]], audio
    assert not any("so far" in line for line in audio)
    final_2 = next(i for i, line in enumerate(lines) if line.startswith("final    customer #2"))
    assert lines.index(audio[0]) < final_2 < lines.index(audio[1])


def test_a_pseudo_translation_shows_its_language_once(mockglot, tmp_path, capsys):
    mockglot.upload_scenario({"name": "cli-pseudo", "turns": {"customer": [{"text": "Grüezi mitenand"}]}})
    path = tmp_path / "short.ulaw"
    path.write_bytes(utterance())
    args = ("--speed", "full", "--scenario", "cli-pseudo", "--source-language", "de", "--target-language", "en")
    assert stream(mockglot, str(path), *args) == 0
    out = capsys.readouterr().out
    assert "final    customer #1  Grüezi mitenand  => [en] Grüezi mitenand  (" in out
    assert "      [en] Grüezi mitenand\n" in out and "[en] [en]" not in out


def test_a_16_khz_pcm_wav_is_resampled_and_encoded(mockglot, tmp_path, capsys):
    speech = codec.mulaw_to_pcm(utterance())
    pcm = codec.resample(speech, 8000, 16000)
    path = write_pcm_wav(tmp_path / "call.wav", pcm, 16000)
    assert stream(mockglot, str(path), "--speed", "full", "--source-language", "de", "--target-language", "en") == 0
    assert "final    customer #1  Ich möchte meine Bestellung ändern" in capsys.readouterr().out
    (session,) = mockglot.sessions()
    received = parse_wav(mockglot.received_audio(session["id"], "customer")).data
    assert received == codec.pcm_to_mulaw(codec.resample(pcm, 16000, 8000))


def test_a_mulaw_wav_is_sent_as_it_is_and_the_agent_can_speak(mockglot, tmp_path, capsys):
    audio = silence(200) + tone(1000) + silence(700)
    path = tmp_path / "agent.wav"
    path.write_bytes(mulaw_wav(audio, mulaw=True))
    assert stream(mockglot, str(path), "--speed", "full", "--speaker", "agent") == 0
    assert "final    agent #1  Of course, what is your order number?" in capsys.readouterr().out
    (session,) = mockglot.sessions()
    assert parse_wav(mockglot.received_audio(session["id"], "agent")).data == audio


def test_realtime_speed_and_the_scenario_flag(mockglot, tmp_path, capsys):
    mockglot.upload_scenario({"name": "cli-hello", "turns": {"customer": [{"text": "Hallo", "translation": "Hello"}]}})
    path = tmp_path / "short.ulaw"
    path.write_bytes(tone(300) + silence(600))
    assert stream(mockglot, str(path), "--scenario", "cli-hello", "--target-language", "en") == 0
    out = capsys.readouterr().out
    assert "(realtime)" in out and "final    customer #1  Hallo  => [en] Hello" in out
    assert [s["scenario"] for s in mockglot.sessions()] == ["cli-hello"]


def test_a_stream_the_server_breaks_exits_1_and_the_session_is_still_ended(mockglot, capsys):
    mockglot.stream_fault(action="close", after_frames=5, close_code=1011)
    assert stream(mockglot, str(GERMAN_CALL), "--speed", "full") == 1
    out, err = capsys.readouterr()
    assert err == "mockglot stream: the stream closed with code 1011\n"
    assert "transcript " in out  # what there was, printed all the same
    assert [s["status"] for s in mockglot.sessions()] == ["ended"]


def test_a_session_error_frame_exits_1(mockglot, capsys):
    mockglot.stream_fault(action="error", after_frames=3, error_code="internal_error")
    assert stream(mockglot, str(GERMAN_CALL), "--speed", "full") == 1
    out, err = capsys.readouterr()
    assert any(line.startswith("error    internal_error: ") for line in out.splitlines())
    assert err == "mockglot stream: the server reported 1 error(s) on the stream\n"


def test_a_frame_that_is_not_json_is_an_error_line_not_a_traceback(mockglot, capsys):
    """mockglot's own `malformed` fault made the command end in a msgspec traceback."""
    mockglot.stream_fault(action="malformed", after_frames=3)
    assert stream(mockglot, str(GERMAN_CALL), "--speed", "full") == 1
    out, err = capsys.readouterr()
    assert 'error    a frame that is not a JSON object: \'{"type": "transcript.final", "text": \'' in out
    assert "final    customer #2  Meine Bestellnummer ist 12345" in out  # the stream went on
    assert err == "mockglot stream: the server reported 1 error(s) on the stream\n"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.wav", "cannot read {path}: No such file or directory"),
        (lambda d: d / "notes.txt",
         "{path}: not a WAV file (no RIFF/WAVE header) (raw 8 kHz mu-law must be named *.ulaw)"),
        (lambda d: write_pcm_wav(d / "stereo.wav", b"\0\0" * 1600, 8000, channels=2),
         "{path}: the WAV file has 2 channels: the stream takes mono audio (raw 8 kHz mu-law must be named *.ulaw)"),
        (lambda d: write_pcm_wav(d / "8bit.wav", b"\x80" * 800, 8000, width=1),
         "{path}: unsupported WAV encoding (format 1, 8-bit): use 16-bit PCM or 8-bit mu-law (raw 8 kHz mu-law must "
         "be named *.ulaw)"),
        (lambda d: d / "empty.ulaw", "{path} holds no audio"),
        (lambda d: with_rate(write_pcm_wav(d / "rate0.wav", b"\0\0" * 1600, 8000), 0),
         "{path}: the WAV file says 0 samples a second: give audio of 1,000 to 384,000 Hz (raw 8 kHz mu-law must be "
         "named *.ulaw)"),
        (lambda d: with_rate(write_pcm_wav(d / "fast.wav", b"\0" * 1600, 8000, width=1), 4_000_000_000),
         "{path}: the WAV file says 4000000000 samples a second: give audio of 1,000 to 384,000 Hz (raw 8 kHz mu-law "
         "must be named *.ulaw)"),
    ],
)  # fmt: skip
def test_unusable_files_exit_2_with_one_line(mockglot, tmp_path, capsys, make, message):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty.ulaw").write_bytes(b"")
    path = make(tmp_path)
    assert stream(mockglot, str(path)) == 2
    assert capsys.readouterr() == ("", f"mockglot stream: {message.format(path=path)}\n")
    assert mockglot.requests() == []  # nothing reached the server


def test_http_errors_exit_1_with_the_code_and_param(mockglot, capsys):
    assert stream(mockglot, str(GERMAN_CALL), "--source-language", "xx") == 1
    assert capsys.readouterr().err.startswith(
        "mockglot stream: POST /v1/sessions -> 422 invalid_language_code (param source_language): "
    )
    assert stream(mockglot, str(GERMAN_CALL), "--scenario", "nope") == 1
    assert "(param metadata.mockglot_scenario): Unknown scenario 'nope'" in capsys.readouterr().err


AGENT = '{"system_prompt": "You take orders.", "voice": "nova"}'


def test_ai_agent_mode_takes_its_agent_inline_or_saved(mockglot, capsys):
    """`--mode ai_agent` could not pass the `ai_agent` the contract requires, so it always ended in a 422."""
    saved = checked(mockglot.client.http.post("/v1/agents", json={"name": "orders", "system_prompt": "Take orders."}))
    for flags in (["--ai-agent", AGENT], ["--agent-id", saved["id"]]):
        assert stream(mockglot, str(GERMAN_CALL), "--mode", "ai_agent", *flags, "--speed", "full") == 0
        out, err = capsys.readouterr()
        assert err == ""
        finals = [" ".join(line.split()[1:3]) for line in out.splitlines() if line.startswith("final")]
        assert finals == ["customer #1", "agent #2", "customer #3", "agent #4"]  # the AI answers each customer turn
    assert [s["mode"] for s in mockglot.sessions()] == ["ai_agent", "ai_agent"]


def test_a_saved_agent_s_overrides_reach_the_server(mockglot, capsys):
    """`mockglot stream` had `--agent-id` but no way to send the API's `overrides` with it."""
    saved = checked(mockglot.client.http.post("/v1/agents", json={"name": "orders", "system_prompt": "Take orders."}))
    flags = ["--mode", "ai_agent", "--agent-id", saved["id"], "--speed", "full"]
    assert stream(mockglot, str(GERMAN_CALL), *flags, "--overrides", '{"voice": "alloy"}') == 0
    created = next(r for r in mockglot.requests() if r["method"] == "POST" and r["path"] == "/v1/sessions")
    assert json.loads(created["body"])["overrides"] == {"voice": "alloy"}
    capsys.readouterr()
    assert stream(mockglot, str(GERMAN_CALL), *flags, "--overrides", '{"temperature": 5}') == 1  # checked there
    assert "422 invalid_field_value (param overrides.temperature)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ([], '--mode ai_agent needs its AI agent: --ai-agent \'{"system_prompt": '),
        (["--ai-agent", "{system_prompt: x}"], "--ai-agent is not JSON (JSON is malformed: "),
        (["--ai-agent", '"You take orders."'], '--ai-agent must be a JSON object, e.g. \'{"system_prompt": '),
        (["--ai-agent", AGENT, "--overrides", "{}"], "--overrides changes a saved agent's fields: give its --agent-id"),
        (
            ["--agent-id", "agt_x", "--overrides", "[]"],
            '--overrides must be a JSON object, e.g. \'{"voice": "alloy"}\'',
        ),
    ],
)
def test_ai_agent_mode_without_a_usable_agent_exits_2_before_any_request(mockglot, capsys, flags, message):
    assert stream(mockglot, str(GERMAN_CALL), "--mode", "ai_agent", *flags) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"mockglot stream: {message}") and err.count("\n") == 1
    assert mockglot.requests() == []


def test_an_unreachable_server_or_a_bad_url_is_one_line_not_a_traceback(capsys):
    assert main(["stream", str(GERMAN_CALL), "--url", "http://127.0.0.1:9"]) == 1
    assert capsys.readouterr().err.startswith("mockglot stream: cannot reach http://127.0.0.1:9: ")
    assert main(["stream", str(GERMAN_CALL), "--url", "localhost:8080"]) == 2
    assert capsys.readouterr().err.startswith("mockglot stream: bad --url 'localhost:8080': ")


def test_the_command_uses_only_the_public_api():
    """Importing it loads neither the server nor its state: it can only talk HTTP and WebSocket to a server."""
    probe = "import sys, mockglot.stream_cli; print(sorted(m for m in sys.modules if m.startswith('mockglot.')))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    for internal in ("mockglot.app", "mockglot.control", "mockglot.state", "mockglot.engines", "mockglot.api"):
        assert f"'{internal}" not in loaded, loaded


def test_extensible_wavs_are_read_by_their_sub_format():
    data = tone(100)
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, 1, 8000, 8000, 1, 8, 22, 8, 4) + struct.pack("<H", 7) + bytes(14)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    parsed = parse_wav(b"RIFF" + struct.pack("<I", len(body)) + body)
    assert (parsed.format, parsed.bits, parsed.data) == (7, 8, data)
