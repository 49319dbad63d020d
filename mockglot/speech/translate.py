"""The translation stage every engine shares: scripted, then phrasebook, then a visible pseudo-translation.

A translation is always present and never silently wrong: what the emulator cannot translate it marks as
such (`[en] Guten Tag`), so a test that asserts on a translation fails loudly instead of passing on nonsense.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

# A phrasebook file is named `<src>-<dst>.json`, both lowercase ISO-639-1 codes.
_FILE_NAME = re.compile(r"^([a-z]{2})-([a-z]{2})\.json$")
# Trailing punctuation that does not change a phrase's meaning for lookup (Latin, CJK, Arabic, Greek, Thai).
_TRAILING = ".,;:!?…。、！？，；：؟،·;\u0e2f\"'»«”“’ \t\r\n"


def normalise(phrase: str) -> str:
    """The lookup key: NFC, case-folded, inner whitespace collapsed, no surrounding space or final punctuation."""
    text = " ".join(unicodedata.normalize("NFC", phrase).casefold().split())
    return text.rstrip(_TRAILING).strip()


class Phrasebook:
    """Phrase tables loaded from `<src>-<dst>.json` files; a later directory overrides an earlier one."""

    def __init__(self, directories: Iterable[Path]) -> None:
        self._tables: dict[tuple[str, str], dict[str, str]] = {}
        for directory in directories:
            for path in sorted(Path(directory).glob("*.json")):
                match = _FILE_NAME.match(path.name)
                if match:
                    table = self._tables.setdefault((match[1], match[2]), {})
                    table.update(_load(path))

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """The (source, target) language pairs with at least one phrase."""
        return sorted(pair for pair, table in self._tables.items() if table)

    def lookup(self, text: str, source: str | None, target: str) -> str | None:
        """The translation of `text` into `target`; with no `source`, any table into `target` may answer."""
        key = normalise(text)
        for (src, dst), table in self._tables.items():
            if dst == target and (source is None or src == source) and key in table:
                return table[key]
        return None


def _load(path: Path) -> dict[str, str]:
    """Read one phrasebook file, failing with its path rather than a bare JSON error."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"phrasebook {path}: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f"phrasebook {path}: expected a JSON object mapping phrase -> translation (strings)")
    return {normalise(k): v for k, v in data.items() if v.strip()}


class Translator:
    """scripted > phrasebook > `[<target>] <text>`."""

    def __init__(self, phrasebook_dirs: Iterable[Path]) -> None:
        self.phrasebook = Phrasebook(phrasebook_dirs)

    def translate(self, text: str, source: str | None, target: str, scripted: str | None = None) -> str:
        if scripted is not None and scripted.strip():
            return scripted
        if source == target and text.strip():
            return text  # nothing to translate: the text is its own exact translation
        return self.phrasebook.lookup(text, source, target) or f"[{target}] {text}"
