"""Analyses (`anl_`): a session's transcript read for a summary, sentiment, compliance, keywords, performance.

(r2) A request names a `profile` (default "default"; [emulator] any name, recorded and echoed, every profile
analyses alike) and what to `include` (default all); results not included are null. [emulator] An analysis
covers the transcript's turns at the moment it was requested (a live session may be analysed; later turns are
not in it). It is `processing` for `PROCESSING_SECONDS` of the server clock, then `completed`, or `failed`
(with `error`) when the session's `metadata.mockglot_analysis` is `"fail"`. Every result is computed from the
turns alone, so the same transcript always gives the same analysis:

- summary: who spoke first and what they said (with its translation), then the turn counts;
- sentiment: a label per speaker (`positive`, `neutral`, `negative`) from small multilingual word lists over
  each turn's text and translation (a speaker who said nothing is `neutral`);
- compliance: `flagged` with a flag for each card number (13-19 digits) or profanity, with its turn; else `ok`;
- keywords: up to 10 words of 4+ letters, most frequent first (ties: first said), common words left out;
- performance: `score` = 0.6 x mean confidence + 0.4 x the agent's sentiment (-1..1 mapped to 0..1), less 0.2
  when compliance is flagged, within 0..1; plus turns, talk time (`end_ms - start_ms`) and share per speaker.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Literal

import msgspec

from mockglot.errors import ApiError
from mockglot.state.auth import Owner
from mockglot.state.clock import Clock
from mockglot.state.events import Event, EventBus
from mockglot.state.randomness import Randomness
from mockglot.state.replica import DocTracker, SharedDocs
from mockglot.state.sessions import SessionRecord, Turn
from mockglot.wire import ANALYSIS_RESULTS, Compliance, ComplianceFlag, Performance, Sentiment, SentimentLabel

PROCESSING_SECONDS = 5.0
FAIL_METADATA_KEY = "mockglot_analysis"
SPEAKERS = ("customer", "agent")
MAX_KEYWORDS = 10


def _wordset(*lines: str) -> frozenset[str]:
    return frozenset(" ".join(lines).split())


POSITIVE = _wordset(
    "thank thanks thankful great good perfect happy glad excellent wonderful love helpful resolved pleased",
    "appreciate awesome fantastic nice fine",
    "danke gut super perfekt toll prima schön freundlich hilfreich wunderbar",
    "gracias bien perfecto excelente genial",
    "merci parfait excellent génial",
)
NEGATIVE = _wordset(
    "problem problems angry bad terrible awful broken wrong complaint disappointed unhappy worst horrible",
    "annoyed frustrated useless late never unacceptable",
    "schlecht falsch kaputt beschwerde ärgerlich enttäuscht leider nie",
    "malo problema terrible queja",
    "mauvais problème plainte",
)
COMMON = _wordset(
    "that this with have what your from they will would there their about which when were been into than then",
    "them these some just like also only very here where more much thank thanks please sure okay",
    "eine einer einen nicht mich dich sich sind habe haben wird wurde meine meiner ihre ihren bitte danke",
    "auch noch schon oder aber dass wenn dann hier",
)
PROFANITY = _wordset("damn shit fuck fucking crap idiot bastard scheiße scheisse mist mierda merde")
WORD = re.compile(r"\w+", re.UNICODE)
CARD_NUMBER = re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)")
POSITIVE_FROM, NEGATIVE_FROM = 0.25, -0.25


@dataclass(slots=True)
class AnalysisRecord:
    id: str
    session: SessionRecord
    turns: list[Turn]  # the transcript when the analysis was requested
    created_at: float
    due_at: float
    fail: bool
    profile: str = "default"
    include: tuple[str, ...] = ANALYSIS_RESULTS
    status: Literal["processing", "completed", "failed"] = "processing"
    completed_at: float | None = None
    summary: str | None = None
    sentiment: Sentiment | None = None
    compliance: Compliance | None = None
    keywords: list[str] | None = None
    performance: Performance | None = None
    failure_reason: str | None = None

    @property
    def owner(self) -> Owner:
        return self.session.owner


class AnalysisStore(SharedDocs):
    def __init__(self, clock: Clock, randomness: Randomness, events: EventBus) -> None:
        self.clock = clock
        self.randomness = randomness
        self.events = events
        self._analyses: dict[str, AnalysisRecord] = {}
        self._processing: dict[str, AnalysisRecord] = {}  # not yet finished: all the sweep has to look at
        self._by_org: dict[str, dict[str, AnalysisRecord]] = {}  # so one organization's reset costs only its own
        self._by_session: dict[str, list[AnalysisRecord]] = {}  # what goes when retention forgets a session
        self.tracker: DocTracker | None = None  # shared between workers (`share()`)

    # --- shared between workers (see state/replica.py): a document per analysis ----------------------------

    name = "analyses"

    def share(self, session: Callable[[str], SessionRecord | None]) -> None:
        self.tracker = DocTracker(self._encode)
        self._session = session

    def _touch(self, record: AnalysisRecord) -> None:
        if self.tracker is not None:
            self.tracker.touch(record.id)

    def _encode(self, analysis_id: str) -> bytes | None:
        record = self._analyses.get(analysis_id)
        if record is None:
            return None
        values = {name: getattr(record, name) for name in _FIELDS}
        return _ANALYSIS_ENCODER.encode(_AnalysisDoc(session_id=record.session.id, **values))

    def load(self, doc: str, data: bytes | None) -> None:
        if self.tracker is not None:
            self.tracker.loaded(doc, data)
        old = self._analyses.pop(doc, None)
        if old is not None:
            self._processing.pop(old.id, None)
            self._by_org.get(old.owner[0], {}).pop(old.id, None)
            self._by_session[old.session.id] = [r for r in self._by_session.get(old.session.id, ()) if r is not old]
        if data is None:
            return
        loaded = _ANALYSIS_DECODER.decode(data)
        session = self._session(loaded.session_id)
        if session is None:
            return
        record = AnalysisRecord(session=session, **{name: getattr(loaded, name) for name in _FIELDS})
        self._analyses[record.id] = record
        if record.status == "processing":
            self._processing[record.id] = record
        self._by_org.setdefault(session.owner[0], {})[record.id] = record
        self._by_session.setdefault(session.id, []).append(record)

    def reset(self, organization: str | None = None) -> None:
        if organization is None:
            self._analyses.clear()
            self._processing.clear()
            self._by_org.clear()
            self._by_session.clear()
            return
        for record in self._by_org.pop(organization, {}).values():
            self._touch(record)
            self._analyses.pop(record.id, None)
            self._processing.pop(record.id, None)
            self._by_session.pop(record.session.id, None)

    def evict(self, sessions: list[SessionRecord]) -> None:
        """Forget the analyses of sessions that retention forgot (one still processing never finishes)."""
        for session in sessions:
            for record in self._by_session.pop(session.id, ()):
                self._touch(record)
                self._analyses.pop(record.id, None)
                self._processing.pop(record.id, None)
                by_org = self._by_org.get(record.owner[0])
                if by_org is not None:
                    by_org.pop(record.id, None)
                    if not by_org:
                        del self._by_org[record.owner[0]]

    def all(self, organization: str | None = None) -> list[AnalysisRecord]:
        if organization is None:
            return list(self._analyses.values())
        return list(self._by_org.get(organization, {}).values())

    def find(self, analysis_id: str) -> AnalysisRecord | None:
        """Any owner's analysis, as it stands (no sweep): for the server's own inspection."""
        return self._analyses.get(analysis_id)

    def check(self, session: SessionRecord) -> None:
        """An analysis needs a transcript: at least one turn."""
        if not session.turns:
            raise ApiError(
                "transcript_empty",
                f"Session {session.id} has no transcript turns yet, so there is nothing to analyse. Stream "
                f"some speech first (GET /v1/sessions/{session.id}/transcript shows the turns).",
            )

    def create(
        self, session: SessionRecord, profile: str = "default", include: Sequence[str] | None = None
    ) -> AnalysisRecord:
        self.check(session)
        now = self.clock.now()
        record = AnalysisRecord(
            id=self.randomness.new_id("anl", "analysis", now, session.api_key),
            session=session,
            turns=list(session.turns),
            created_at=now,
            due_at=now + PROCESSING_SECONDS,
            fail=session.metadata.get(FAIL_METADATA_KEY) == "fail",
            profile=profile,
            include=ANALYSIS_RESULTS if include is None else tuple(r for r in ANALYSIS_RESULTS if r in include),
        )
        self._analyses[record.id] = self._processing[record.id] = record
        self._touch(record)
        self._by_org.setdefault(session.owner[0], {})[record.id] = record
        self._by_session.setdefault(session.id, []).append(record)
        return record

    def get(self, owner: Owner, analysis_id: str) -> AnalysisRecord:
        record = self._analyses.get(analysis_id)
        if record is not None:
            self._finish_if_due(record)
        if record is None or record.owner != owner:
            raise ApiError(
                "analysis_not_found",
                f"No analysis {analysis_id!r} for this API key. Analyses are visible only to keys of the "
                "organization and environment (live/test) that requested them.",
                param="id",
            )
        return record

    def sweep(self) -> None:
        """Finish every analysis whose processing time on the server clock is over."""
        for record in list(self._processing.values()):
            self._finish_if_due(record)

    def _finish_if_due(self, record: AnalysisRecord) -> None:
        if record.status != "processing" or self.clock.now() < record.due_at:
            return
        self._processing.pop(record.id, None)
        self._touch(record)
        record.completed_at = record.due_at
        if record.fail:
            record.status = "failed"
            record.failure_reason = (
                f'Failed on purpose: the session\'s metadata.{FAIL_METADATA_KEY} is "fail" [mockglot].'
            )
        else:
            record.status = "completed"
            wanted, turns = record.include, record.turns
            flags = compliance(turns)
            record.summary = summary(turns) if "summary" in wanted else None
            record.sentiment = sentiment(turns) if "sentiment" in wanted else None
            record.compliance = flags if "compliance" in wanted else None
            record.keywords = keywords(turns) if "keywords" in wanted else None
            record.performance = performance(turns, flags) if "performance" in wanted else None
        event = "analysis.complete" if record.status == "completed" else "analysis.failed"
        self.events.publish(Event(event, record.session, resource=record))


# --- the analysis itself: pure functions of the turns -------------------------------------------------------


def _words(turn: Turn) -> list[str]:
    return WORD.findall(f"{turn.text} {turn.translation_text or ''}".lower())


def _score(turns: Sequence[Turn]) -> float:
    words = [w for t in turns for w in _words(t)]
    positive = sum(w in POSITIVE for w in words)
    negative = sum(w in NEGATIVE for w in words)
    return round((positive - negative) / max(positive + negative, 1), 2)


def _label(score: float) -> SentimentLabel:
    return "positive" if score >= POSITIVE_FROM else "negative" if score <= NEGATIVE_FROM else "neutral"


def sentiment(turns: Sequence[Turn]) -> Sentiment:
    customer, agent = (_label(_score([t for t in turns if t.speaker == s])) for s in SPEAKERS)
    return Sentiment(customer=customer, agent=agent)


def compliance(turns: Sequence[Turn]) -> Compliance:
    flags: list[ComplianceFlag] = []
    for turn in turns:
        text = f"{turn.text} {turn.translation_text or ''}"
        if CARD_NUMBER.search(text):
            flags.append(ComplianceFlag(code="card_number", turn=turn.sequence, speaker=turn.speaker))  # type: ignore[arg-type]
        if PROFANITY.intersection(_words(turn)):
            flags.append(ComplianceFlag(code="profanity", turn=turn.sequence, speaker=turn.speaker))  # type: ignore[arg-type]
    return Compliance(status="flagged" if flags else "ok", flags=flags)


def keywords(turns: Sequence[Turn]) -> list[str]:
    counts = Counter(w for t in turns for w in _words(t) if len(w) >= 4 and w.isalpha() and w not in COMMON | PROFANITY)
    return [word for word, _ in counts.most_common(MAX_KEYWORDS)]  # ties keep the order words were first said


def performance(turns: Sequence[Turn], flags: Compliance) -> Performance:
    counts = Counter(t.speaker for t in turns)
    talk_ms: Counter[str] = Counter()
    for turn in turns:
        talk_ms[turn.speaker] += max(turn.end_ms - turn.start_ms, 0)
    speakers = [s for s in SPEAKERS if counts[s]]
    total_ms = sum(talk_ms.values())
    confidence = round(sum(t.confidence for t in turns) / len(turns), 2) if turns else 0.0
    agent_mood = (_score([t for t in turns if t.speaker == "agent"]) + 1) / 2
    score = 0.6 * confidence + 0.4 * agent_mood - (0.2 if flags.flags else 0.0)
    return Performance(
        score=round(min(max(score, 0.0), 1.0), 2),
        total_turns=len(turns),
        turns_by_speaker={s: counts[s] for s in speakers},
        talk_time_seconds={s: round(talk_ms[s] / 1000, 1) for s in speakers},
        talk_ratio={s: round(talk_ms[s] / total_ms, 2) if total_ms else 0.0 for s in speakers},
        average_confidence=confidence,
    )


def summary(turns: list[Turn]) -> str:
    first = next((t for t in turns if t.speaker == "customer"), turns[0])
    said = f'"{first.text}"' + (f' ("{first.translation_text}")' if first.translation_text else "")
    counts = Counter(t.speaker for t in turns)
    parts = ", ".join(f"{counts[s]} {s}" for s in SPEAKERS if counts[s])
    plural = "s" if len(turns) != 1 else ""
    mood = _label(_score(turns))
    return f"The {first.speaker} said: {said}. {len(turns)} turn{plural} ({parts}); sentiment {mood}."


class _AnalysisDoc(msgspec.Struct, kw_only=True):
    """An analysis as workers share it: its session by id."""

    session_id: str
    id: str
    turns: list[Turn]
    created_at: float
    due_at: float
    fail: bool
    profile: str
    include: tuple[str, ...]
    status: Literal["processing", "completed", "failed"]
    completed_at: float | None
    summary: str | None
    sentiment: Sentiment | None
    compliance: Compliance | None
    keywords: list[str] | None
    performance: Performance | None
    failure_reason: str | None


_FIELDS = tuple(f.name for f in fields(AnalysisRecord) if f.name != "session")
_ANALYSIS_ENCODER = msgspec.msgpack.Encoder()
_ANALYSIS_DECODER = msgspec.msgpack.Decoder(_AnalysisDoc)
