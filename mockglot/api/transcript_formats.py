"""The transcript as plain text, SubRip and WebVTT [emulator]: the same turns, for eyes and players."""

from __future__ import annotations

import html
from collections.abc import Sequence

from mockglot.state.sessions import Turn

MEDIA_TYPES = {
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}


def _timestamp(ms: int, separator: str) -> str:
    hours, rest = divmod(max(ms, 0), 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{separator}{millis:03d}"


def _one_line(text: str) -> str:
    """A line break inside a turn would end an SRT/VTT cue early: every turn's text is one line."""
    return " ".join(text.split())


def _lines(turn: Turn) -> list[str]:
    lines = [f"[{turn.speaker}] {_one_line(turn.text)}"]
    if turn.translation_text is not None:
        lines.append(f"[{turn.speaker} → {turn.translation_language}] {_one_line(turn.translation_text)}")
    return lines


def as_text(turns: Sequence[Turn]) -> str:
    return "".join(line + "\n" for turn in turns for line in _lines(turn))


def as_srt(turns: Sequence[Turn]) -> str:
    blocks = []
    for index, turn in enumerate(turns, start=1):
        span = f"{_timestamp(turn.start_ms, ',')} --> {_timestamp(turn.end_ms, ',')}"
        blocks.append("\n".join([str(index), span, *_lines(turn)]) + "\n")
    return "\n".join(blocks)


def as_vtt(turns: Sequence[Turn]) -> str:
    blocks = ["WEBVTT\n"]
    for turn in turns:
        span = f"{_timestamp(turn.start_ms, '.')} --> {_timestamp(turn.end_ms, '.')}"
        text = [f"<v {turn.speaker}>{html.escape(line.split('] ', 1)[1], quote=False)}" for line in _lines(turn)]
        blocks.append("\n".join([f"turn-{turn.sequence}", span, *text]) + "\n")
    return "\n".join(blocks)


RENDERERS = {"text": as_text, "srt": as_srt, "vtt": as_vtt}
