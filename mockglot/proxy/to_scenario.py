"""`mockglot scenario from-recording`: a recorded session as an editable scenario, so a real call becomes a
scripted test. Each recorded final becomes a turn of its speaker (an AI agent's replies become `ai_agent`
turns) with its text, translation, confidence and partials; the translated speech the server sent for it
becomes the turn's audio file, next to the scenario."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mockglot.proxy.recording import LoadedRecording


@dataclass(slots=True)
class _Turn:
    speaker: str
    partials: list[str] = field(default_factory=list)
    final: dict[str, Any] | None = None
    audio: bytearray = field(default_factory=bytearray)


def convert(loaded: LoadedRecording, name: str | None = None) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The scenario document and its audio files (file name -> 8 kHz mu-law)."""
    name = name or loaded.name
    turns: dict[int, _Turn] = {}
    order: list[int] = []
    for frame in loaded.recording.frames:
        raw = frame.frame
        if frame.direction != "server" or not isinstance(raw, dict) or not isinstance(raw.get("turn"), int):
            continue
        turn = turns.get(raw["turn"])
        if turn is None:
            turn = turns[raw["turn"]] = _Turn(str(raw.get("speaker", "customer")))
        if frame.type == "transcript.partial" and isinstance(raw.get("text"), str):
            if raw["text"] not in turn.partials:
                turn.partials.append(raw["text"])
        elif frame.type == "transcript.final" and turn.final is None:
            turn.final = raw
            order.append(raw["turn"])
        elif frame.type == "audio.output" and frame.audio is not None:
            turn.audio += loaded.audio_of(frame.audio)
    script: dict[str, list[dict[str, Any]]] = {}
    files: dict[str, bytes] = {}
    for number in order:
        turn = turns[number]
        final = turn.final or {}
        is_ai = final.get("source") == "ai" or turn.speaker == "ai_agent"
        speaker = "ai_agent" if is_ai else turn.speaker
        entry: dict[str, Any] = {"text": final.get("text") or "(empty)"}
        translation = final.get("translation")
        if isinstance(translation, dict) and isinstance(translation.get("text"), str):
            entry["translation"] = translation["text"]
        if isinstance(final.get("confidence"), (int, float)):
            entry["confidence"] = round(float(final["confidence"]), 4)
        if turn.partials:
            entry["partials"] = turn.partials
        if turn.audio:
            file = f"{name}-turn{number}.ulaw"
            files[file] = bytes(turn.audio)
            entry["audio"] = file
        script.setdefault(speaker, []).append(entry)
    header = loaded.recording.header
    document: dict[str, Any] = {
        "name": name,
        "description": f"from the recording of {header.session_id} ({header.upstream}, {header.recorded_at})",
        "source_language": header.source_language,
        "target_language": header.target_language,
        "when_exhausted": "stop",
        "turns": script,
    }
    return {k: v for k, v in document.items() if v is not None}, files


def write(loaded: LoadedRecording, out: Path, name: str | None = None) -> Path:
    document, files = convert(loaded, name)
    out.mkdir(parents=True, exist_ok=True)
    for file, audio in files.items():
        (out / file).write_bytes(audio)
    path = out / f"{document['name']}.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path
