"""State records as wire values: the one place that decides what a resource looks like to a client (the API's
replies and the webhooks' payloads alike). Rendering changes nothing."""

from __future__ import annotations

from msgspec import UNSET, UnsetType

from mockglot import wire
from mockglot.state.agents import AgentRecord
from mockglot.state.analyses import AnalysisRecord
from mockglot.state.clock import isoformat
from mockglot.state.recordings import RecordingRecord
from mockglot.state.sessions import SessionRecord, StreamToken, Turn


def _iso(value: float | None) -> str | None:
    return None if value is None else isoformat(value)


def session(record: SessionRecord, token: StreamToken | None, origin: str) -> wire.Session:
    """The session object; `origin` is the WebSocket origin the client reached us on (ws://host:port). The
    stream is shown while the session has not ended, with `token` (the caller decides whether to reissue it)."""
    stream: wire.StreamInfo | UnsetType = UNSET
    if record.status != "ended" and token is not None:
        stream = wire.StreamInfo(
            url=f"{origin}/v1/sessions/{record.id}/connect",
            token=token.token,
            expires_at=isoformat(token.expires_at),
        )
    routing = record.request.routing
    return wire.Session(
        id=record.id,
        status=record.status,
        mode=record.request.mode,
        provider=record.provider,
        phone_number=routing.phone_number if routing else None,
        source_language=record.request.source_language,
        target_language=record.request.target_language,
        stream=stream,
        recording=record.request.recording or wire.RecordingOptions(),
        metadata=record.request.metadata,
        created_at=isoformat(record.created_at),
        started_at=_iso(record.started_at),
        ended_at=_iso(record.ended_at),
    )


def summary(record: SessionRecord, now: float) -> wire.SessionSummary:
    assert record.ended_at is not None
    return wire.SessionSummary(
        id=record.id, duration_seconds=record.duration_seconds(now), ended_at=isoformat(record.ended_at)
    )


def turn(item: Turn) -> wire.TranscriptTurn:
    translation = (
        wire.Translation(language=item.translation_language, text=item.translation_text)
        if item.translation_language is not None and item.translation_text is not None
        else UNSET
    )
    return wire.TranscriptTurn(
        sequence=item.sequence,
        speaker=item.speaker,  # type: ignore[arg-type]
        language=item.language,
        text=item.text,
        translation=translation,
        confidence=item.confidence,
        timestamp=isoformat(item.timestamp),
        source=UNSET if item.source is None else item.source,
    )


def transcript(record: SessionRecord, now: float) -> wire.Transcript:
    languages: list[str] = []
    for item in record.turns:
        if item.language and item.language not in languages:
            languages.append(item.language)
    return wire.Transcript(
        id="trn_" + record.id.removeprefix("sess_"),  # (r2) the Quick Start's shape
        session_id=record.id,
        status="completed" if record.status == "ended" else "in_progress",
        turns=[turn(item) for item in record.turns],
        metadata=wire.TranscriptMetadata(
            total_turns=len(record.turns),
            duration_seconds=record.duration_seconds(now),
            languages_detected=languages,
        ),
    )


def agent(record: AgentRecord) -> wire.Agent:
    request = record.request
    return wire.Agent(
        id=record.id,
        name=request.name,
        system_prompt=request.system_prompt,
        voice=request.voice,
        temperature=request.temperature,
        knowledge_base_id=request.knowledge_base_id,
        tools=request.tools,
        created_at=isoformat(record.created_at),
    )


def recording(record: RecordingRecord) -> wire.Recording:
    ready = record.status == "ready"
    return wire.Recording(
        id=record.id,
        session_id=record.session.id,
        status=record.status,
        duration=record.duration_seconds,
        size=len(record.audio),
        download_url=f"/v1/recordings/{record.id}/audio" if ready else None,
        created_at=isoformat(record.created_at),
        expires_at=isoformat(record.expires_at),
        failure_reason=record.failure_reason if record.failure_reason is not None else UNSET,
    )


def analysis(record: AnalysisRecord) -> wire.Analysis:
    return wire.Analysis(
        id=record.id,
        session_id=record.session.id,
        profile=record.profile,
        status=record.status,
        summary=record.summary,
        sentiment=record.sentiment,
        compliance=record.compliance,
        keywords=record.keywords,
        performance=record.performance,
        error=record.failure_reason,
        created_at=isoformat(record.created_at),
        completed_at=_iso(record.completed_at),
    )
