"""`mockglot models list|download`: fetch official Vosk models for users who have internet.

The server never downloads anything; this command does it once, ahead of time, into a directory the Vosk engine
searches (`~/.cache/mockglot/models` by default), and prints the `--vosk-model LANG=PATH` flag to use.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import IO
from urllib.parse import urljoin

import httpx
import msgspec

from mockglot.engines.vosk import (
    VOSK_LANGUAGE_ALIASES,
    VoskModels,
    default_model_dir,
    default_search_dirs,
    iso_language,
    model_problem,
)

DEFAULT_INDEX_URL = "https://alphacephei.com/vosk/models/model-list.json"
INDEX_URL_ENV = "MOCKGLOT_VOSK_INDEX_URL"

OFFLINE_HINT = (
    "Offline, a model already on disk (an unpacked archive from https://alphacephei.com/vosk/models) works with "
    "`mockglot serve --vosk-model LANG=PATH`"
)

EXIT_FAILED = 1  # network, disk or archive trouble
EXIT_USAGE = 2  # what was asked for does not exist (argparse uses 2 for bad arguments too)


class ModelsError(Exception):
    """A failure reported as one line on stderr with an exit code, never as a traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class IndexEntry(msgspec.Struct, kw_only=True):
    """One model of Vosk's `model-list.json`; `obsolete` is the string "true"/"false" there."""

    name: str
    lang: str
    url: str
    type: str = ""
    size: int = 0
    size_text: str = ""
    lang_text: str = ""
    version: str = ""
    obsolete: str | bool = False

    @property
    def is_obsolete(self) -> bool:
        return self.obsolete is True or str(self.obsolete).lower() == "true"


def fetch_index(url: str) -> list[IndexEntry]:
    try:
        response = httpx.get(url, timeout=30, follow_redirects=True)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise ModelsError(f"cannot fetch the model index {url}: {exc}. {OFFLINE_HINT}") from None
    try:
        return msgspec.json.decode(response.content, type=list[IndexEntry])
    except msgspec.DecodeError as exc:
        raise ModelsError(f"the model index {url} is not a Vosk model list: {exc}") from None


def match_rank(entry: IndexEntry, language: str) -> int | None:
    """How well an entry serves `language`: 0 exact code, 1 Vosk's name for it, 2 a regional variant."""
    code = entry.lang.lower()
    if code == language:
        return 0
    if iso_language(code) != language:
        return None
    return 1 if code in VOSK_LANGUAGE_ALIASES else 2


def choose(entries: Sequence[IndexEntry], language: str) -> IndexEntry:
    """The best-matching, smallest non-obsolete model for `language`: quickest to fetch and to load."""
    language = language.strip().lower()
    ranked = [
        (rank, entry.size or sys.maxsize, entry.name, entry)
        for entry in entries
        if not entry.is_obsolete and (rank := match_rank(entry, language)) is not None
    ]
    if not ranked:
        known = sorted({iso_language(entry.lang) for entry in entries if not entry.is_obsolete})
        raise ModelsError(f"no Vosk model for language {language!r}; the index has: {', '.join(known)}", EXIT_USAGE)
    return min(ranked, key=lambda item: item[:3])[3]


class Progress:
    """A download progress bar on stderr: redrawn in place on a terminal, a line per 10% otherwise."""

    WIDTH = 30

    def __init__(self, label: str, total: int, stream: IO[str] | None = None) -> None:
        self.label, self.total = label, total
        self.stream = stream or sys.stderr
        self.done = 0
        self.tty = self.stream.isatty()
        self._shown = ""
        self._shown_step = -1
        self._shown_at = 0.0

    def advance(self, count: int) -> None:
        self.done += count
        if self.tty and time.monotonic() - self._shown_at >= 0.1:
            self._shown_at = time.monotonic()
            self._show("\r")
        elif not self.tty and self.total and (step := self.done * 10 // self.total) > self._shown_step:
            self._shown_step = step
            self._show("", "\n")

    def finish(self) -> None:
        if self.tty:
            self._show("\r", "\n")
        elif self._line() != self._shown:
            self._show("", "\n")

    def _show(self, before: str, after: str = "") -> None:
        self._shown = self._line()
        self.stream.write(before + self._shown + after)
        self.stream.flush()

    def _line(self) -> str:
        done_mib = self.done / 2**20
        if not self.total:
            return f"{self.label}  {done_mib:.1f} MiB"
        fraction = min(1.0, self.done / self.total)
        bar = "#" * int(fraction * self.WIDTH)
        percent = int(fraction * 100)  # rounded down: 100% only once it is all there
        return f"{self.label}  [{bar:<{self.WIDTH}}] {percent:3d}%  {done_mib:.1f}/{self.total / 2**20:.1f} MiB"


def download_archive(url: str, target: IO[bytes], label: str, expected_size: int) -> None:
    """Stream `url` into `target` with a progress bar, never holding the whole archive in memory."""
    try:
        with httpx.stream("GET", url, timeout=60, follow_redirects=True) as response:
            response.raise_for_status()
            total = int(response.headers.get("content-length") or expected_size or 0)
            progress = Progress(label, total)
            for chunk in response.iter_bytes(1 << 16):
                target.write(chunk)
                progress.advance(len(chunk))
            progress.finish()
    except httpx.HTTPError as exc:
        raise ModelsError(f"cannot download {url}: {exc}") from None


def unpack(archive: Path, destination: Path) -> Path:
    """Unpack a model zip as `destination`, atomically: the model folder appears whole or not at all.

    Vosk's archives hold one top folder; its contents become `destination` whatever the folder is called.
    """
    name = destination.name
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = [PurePosixPath(info.filename) for info in bundle.infolist()]
            if any(member.is_absolute() or ".." in member.parts for member in members):
                raise ModelsError(f"the archive for {name} has paths outside its folder; not unpacking it")
            if (broken := bundle.testzip()) is not None:
                raise ModelsError(f"the archive for {name} is corrupt (bad CRC in {broken})")
            staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=destination.parent))
            try:
                bundle.extractall(staging)
                tops = list(staging.iterdir())
                root = tops[0] if len(tops) == 1 and tops[0].is_dir() else staging
                if (problem := model_problem(root)) is not None:
                    raise ModelsError(f"the archive for {name} does not hold a Vosk model: {problem}")
                if destination.exists():
                    shutil.rmtree(destination)
                root.rename(destination)
                return destination
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, zlib.error) as exc:
        raise ModelsError(f"the archive for {name} is not a valid zip file ({exc})") from None


def download(language: str, directory: Path, index_url: str) -> Path:
    entry = choose(fetch_index(index_url), language)
    destination = directory / entry.name
    if model_problem(destination) is None:
        print(f"{entry.name} is already in {directory}", file=sys.stderr)
        return destination
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(prefix=f".{entry.name}-", suffix=".zip.part", dir=directory) as part:
            url = urljoin(index_url, entry.url)
            size = f" ({entry.size_text})" if entry.size_text else ""
            print(f"downloading {entry.name}{size} from {url}", file=sys.stderr)
            download_archive(url, part, entry.name, entry.size)
            part.flush()
            return unpack(Path(part.name), destination)
    except OSError as exc:
        raise ModelsError(f"cannot write the model to {directory}: {exc}") from None


def list_models(directory: Path, index_url: str, show_obsolete: bool) -> None:
    local = VoskModels(search_dirs=list(dict.fromkeys([directory, *default_search_dirs()])))
    for language in local.languages():
        print(f"installed  {language}  {local.path(language)}")
    try:
        entries = fetch_index(index_url)
    except ModelsError as error:  # offline: what is installed is still the answer, and it was printed
        installed = "the models above are installed" if local.languages() else "no models are installed"
        print(f"\nnote: {installed}; the list of models to download is unavailable ({error})", file=sys.stderr)
        return
    by_language: dict[str, list[IndexEntry]] = {}
    for entry in entries:
        if show_obsolete or not entry.is_obsolete:
            by_language.setdefault(iso_language(entry.lang), []).append(entry)
    for language, group in sorted(by_language.items()):
        print(f"\n{language}  {group[0].lang_text}")
        for entry in sorted(group, key=lambda e: e.size):
            here = "*" if model_problem(directory / entry.name) is None else " "
            notes = "  (obsolete)" if entry.is_obsolete else ""
            print(f"  {here} {entry.name:<44} {entry.type:<6} {entry.size_text:>9}{notes}")
    print(f"\n* installed in {directory}; fetch one with: mockglot models download LANG")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mockglot models", description="Fetch offline Vosk speech models.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", type=Path, default=default_model_dir(), help="model directory (default: %(default)s)")
    common.add_argument(
        "--index-url",
        default=os.environ.get(INDEX_URL_ENV) or DEFAULT_INDEX_URL,
        help=f"Vosk model list JSON (default: ${INDEX_URL_ENV} or %(default)s)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", parents=[common], help="models per language; * marks installed")
    listing.add_argument("--all", action="store_true", help="include obsolete models")
    fetching = commands.add_parser("download", parents=[common], help="fetch the smallest model for LANG")
    fetching.add_argument("language", metavar="LANG", help="language code, e.g. de")
    return parser


def run(argv: list[str]) -> int:
    """Entry point of `mockglot models ...`; returns the process exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # bad arguments or --help: argparse has printed why
        return int(exit_.code or 0)
    directory: Path = args.dir.expanduser()
    try:
        if args.command == "list":
            list_models(directory, args.index_url, args.all)
            return 0
        path = download(args.language, directory, args.index_url)
    except ModelsError as error:
        print(f"mockglot models: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("\nmockglot models: interrupted", file=sys.stderr)
        return 130
    flag = f"--vosk-model {args.language.strip().lower()}={path}"
    found = "the Vosk engine finds it there by itself, or start" if directory in default_search_dirs() else "start"
    print(f"installed in {directory}: {found} the server with {flag}", file=sys.stderr)
    print(path)
    return 0
