"""Speech synthesis for `audio.output`: text in, 8 kHz mu-law out.

espeak-ng (shipped by the PyPI package `espeakng-loader`, so pip alone installs it) speaks in the listener's
language; without it a deterministic tone whose length follows the text keeps the pipeline working.
Both are synchronous and CPU-bound: callers run `synthesize` in a thread.
"""

from __future__ import annotations

import _ctypes
import ctypes
import functools
import hashlib
import math
import struct
import threading
from collections import OrderedDict
from typing import Protocol

from mockglot.speech import codec

# ISO-639-1 code -> espeak-ng voice name, where they differ. Every code of the supported list
# (ar bg cs da de el en es fi fr he hi hu id it ja ko nl no pl pt ro ru sk sv th tr uk vi zh) was checked
# with espeak_SetVoiceByName against the espeak-ng data in espeakng-loader 0.2.4: all load, none fall back.
# A voice espeak-ng lacks falls back to `en` at run time (see `_Espeak.speak`).
_VOICE_NAMES: dict[str, str] = {"zh": "cmn", "no": "nb"}
_FALLBACK_VOICE = "en"

# espeak-ng constants (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_EE_OK = 0
_ESPEAK_RATE = 1  # espeak_PARAMETER: words per minute

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class Synthesizer(Protocol):
    name: str

    def synthesize(self, text: str, language: str) -> bytes:
        """Speak `text` in `language` (ISO-639-1); return 8 kHz mu-law."""
        ...

    def cached(self, text: str, language: str) -> bytes | None:
        """What `synthesize` would return if it is at hand without synthesizing, else None (cheap: no thread)."""
        ...


class _CachedSynthesis:
    """A bounded LRU of rendered clips, shared by the loop (`cached`) and the synthesis threads."""

    def __init__(self, cache_size: int) -> None:
        self._cache: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._hits = self._misses = 0

    def _render(self, text: str, language: str) -> bytes:
        raise NotImplementedError

    def cached(self, text: str, language: str) -> bytes | None:
        with self._lock:
            audio = self._cache.get((text, language))
            if audio is not None:
                self._cache.move_to_end((text, language))
                self._hits += 1
            return audio

    def synthesize(self, text: str, language: str) -> bytes:
        audio = self.cached(text, language)
        if audio is None:
            audio = self._render(text, language)  # outside the lock: a render takes milliseconds
            with self._lock:
                self._misses += 1
                self._cache[(text, language)] = audio
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return audio

    def cache_info(self) -> functools._CacheInfo:
        with self._lock:
            return functools._CacheInfo(self._hits, self._misses, self._cache_size, len(self._cache))


class _Espeak:
    """espeak-ng, loaded afresh for every clip.

    espeak-ng keeps synthesis state in C statics that no API call resets (the pitch-flutter phase in wavegen.c
    runs on across utterances), so the same text sounds slightly different depending on what was spoken
    before. Loading the library anew per clip (dlopen, initialise, speak, terminate, dlclose: about 4 ms)
    makes the audio a pure function of (text, voice, speed), which the cache and the committed fixtures rely
    on. The library is not thread-safe either: one process-wide lock serialises every use.
    """

    lock = threading.Lock()

    def __init__(self) -> None:
        import espeakng_loader  # optional dependency: ImportError means "use the tone"

        self._library_path = espeakng_loader.get_library_path()
        self._data_path = espeakng_loader.get_data_path().encode()
        self._chunks: list[bytes] = []
        # Keep a reference: ctypes frees the trampoline when the Python object dies.
        self._callback = _SynthCallback(self._collect)
        self.speak("", _FALLBACK_VOICE, 160)  # fail here, not mid-call, if the library or its data is broken

    def _collect(self, wav: ctypes._Pointer[ctypes.c_short], samples: int, _events: int | None) -> int:
        if wav and samples > 0:
            self._chunks.append(ctypes.string_at(wav, samples * codec.SAMPLE_WIDTH))
        return 0  # 0 = continue synthesis

    def speak(self, text: str, voice: str, words_per_minute: int) -> tuple[bytes, int]:
        """16-bit PCM and its sample rate; a voice espeak-ng lacks is replaced by the fallback voice."""
        with self.lock:
            lib = _open_library(self._library_path)
            try:
                rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self._data_path, 0)
                if rate <= 0:
                    raise RuntimeError(f"espeak_Initialize failed ({rate})")
                lib.espeak_SetSynthCallback(self._callback)
                if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                    lib.espeak_SetVoiceByName(_FALLBACK_VOICE.encode())
                lib.espeak_SetParameter(_ESPEAK_RATE, words_per_minute, 0)
                data = text.encode() + b"\0"
                self._chunks = []
                err = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None)
                if err != _EE_OK:
                    raise RuntimeError(f"espeak_Synth failed ({err})")
                return b"".join(self._chunks), rate
            finally:
                self._chunks = []
                lib.espeak_Terminate()
                _close_library(lib)


def _open_library(path: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(path)
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    lib.espeak_Synth.restype = ctypes.c_int
    return lib


def _close_library(lib: ctypes.CDLL) -> None:
    """Unload, so the next load starts from pristine statics (a no-op where the platform offers no unload)."""
    unload = getattr(_ctypes, "dlclose", None) or getattr(_ctypes, "FreeLibrary", None)
    if unload is not None:
        unload(lib._handle)


@functools.cache
def _espeak() -> _Espeak:
    """Find and check espeak-ng once per process."""
    return _Espeak()


class EspeakSynthesizer(_CachedSynthesis):
    """espeak-ng speech, resampled to 8 kHz mu-law; results cached by (text, language) at this speed."""

    name = "espeak-ng"

    def __init__(self, words_per_minute: int = 160, cache_size: int = 256) -> None:
        super().__init__(cache_size)
        self._engine = _espeak()
        self.words_per_minute = words_per_minute

    def _render(self, text: str, language: str) -> bytes:
        pcm, rate = self._engine.speak(text, voice_for(language), self.words_per_minute)
        return codec.pcm_to_mulaw(codec.resample(pcm, rate, codec.SAMPLE_RATE_HZ))


def voice_for(language: str) -> str:
    """The espeak-ng voice name for an ISO-639-1 code (`pt-BR` and `PT` count as `pt`)."""
    code = language.lower().split("-")[0]
    return _VOICE_NAMES.get(code, code)


class ToneSynthesizer(_CachedSynthesis):
    """Dependency-free stand-in: a tone whose length follows the text and whose pitch identifies it."""

    name = "tone"
    MS_PER_CHAR = 60
    MIN_MS = 300
    MAX_MS = 10_000
    AMPLITUDE = 8000

    def __init__(self, cache_size: int = 256) -> None:
        super().__init__(cache_size)

    def _render(self, text: str, language: str) -> bytes:
        duration_ms = min(max(len(text) * self.MS_PER_CHAR, self.MIN_MS), self.MAX_MS)
        samples = duration_ms * codec.SAMPLE_RATE_HZ // 1000
        step = 2 * math.pi * self.frequency_hz(text, language) / codec.SAMPLE_RATE_HZ
        pcm = struct.pack(f"<{samples}h", *(round(self.AMPLITUDE * math.sin(step * i)) for i in range(samples)))
        return codec.pcm_to_mulaw(pcm)

    @staticmethod
    def frequency_hz(text: str, language: str) -> int:
        """300..1299 Hz from a stable hash (not `hash()`, which is salted per process)."""
        digest = hashlib.sha256(f"{language}\0{text}".encode()).digest()
        return 300 + int.from_bytes(digest[:4], "big") % 1000


def default_synthesizer() -> Synthesizer:
    """espeak-ng when `espeakng-loader` is installed and initialises, else the tone."""
    try:
        return EspeakSynthesizer()
    except (ImportError, OSError, RuntimeError):
        return ToneSynthesizer()
