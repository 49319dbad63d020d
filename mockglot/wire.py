"""The contract as types: every request, response and stream frame of the public API.

Handlers decode into these and encode from them; the OpenAPI document is generated from them. Field order
follows the contract's examples so responses read the same as the documentation.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

LANGUAGES = [
    "ar",
    "bg",
    "cs",
    "da",
    "de",
    "el",
    "en",
    "es",
    "fi",
    "fr",
    "he",
    "hi",
    "hu",
    "id",
    "it",
    "ja",
    "ko",
    "nl",
    "no",
    "pl",
    "pt",
    "ro",
    "ru",
    "sk",
    "sv",
    "th",
    "tr",
    "uk",
    "vi",
    "zh",
]
Language = Literal[
    "ar", "bg", "cs", "da", "de", "el", "en", "es", "fi", "fr", "he", "hi", "hu", "id", "it",
    "ja", "ko", "nl", "no", "pl", "pt", "ro", "ru", "sk", "sv", "th", "tr", "uk", "vi", "zh",
]  # fmt: skip
# Control-plane ranges (README "Limits"): a number outside its range is a 422 naming the field.
MAX_CLOCK_ADVANCE = 100 * 365.25 * 24 * 3600  # seconds, either way; the clock itself stays in 2000..2100
MAX_COUNT = 1_000_000  # times a fault fires, sessions a scenario covers, requests a minute
MAX_CREDITS = 10**12
WAV_RATES_HZ = (1_000, 384_000)  # sample rates a WAV given as audio may have (scenario audio, `mockglot stream`)
MALFORMED = "(malformed)"  # the type a frame that is not a JSON object is shown under (journal, test client)

MODES = ("bidirectional_translation", "assistive_translation", "ai_agent", "help_chat_voice")
Mode = Literal["bidirectional_translation", "assistive_translation", "ai_agent", "help_chat_voice"]
Speaker = Literal["customer", "agent"]
Voice = Literal["alloy", "echo", "fable", "onyx", "nova", "shimmer"]
Status = Literal["created", "active", "ended"]
# server_shutdown [emulator]: mockglot stopped (SIGTERM) while the stream was live (in memory; a worker sharing
# its state in Redis leaves the session live instead)
EndReason = Literal["explicit_end", "api_end", "idle_timeout", "max_duration", "server_shutdown"]

E164 = Annotated[str, Meta(pattern=r"^\+[1-9][0-9]{1,14}$", description="E.164 phone number")]
MetadataKey = Annotated[str, Meta(min_length=1, max_length=40)]
MetadataValue = Annotated[str, Meta(max_length=500)]
Metadata = Annotated[dict[MetadataKey, MetadataValue], Meta(max_length=50)]
SipHeaderName = Annotated[str, Meta(pattern=r"^[Xx]-[A-Za-z0-9-]+$")]


# --- requests -------------------------------------------------------------------------------------------


Provider = Literal["twilio", "telnyx", "sip"]  # who carries a routed call


class SipRouting(Struct, kw_only=True):
    from_uri: Annotated[str, Meta(pattern=r"^sips?:.+")] | None = None
    headers: dict[SipHeaderName, str] | None = None


class Routing(Struct, kw_only=True):
    phone_number: E164 | None = None
    connection_id: Annotated[str, Meta(pattern=r"^pcon_[A-Za-z0-9]+$")] | None = None
    type: Literal["sip"] | None = None
    sip: SipRouting | None = None
    direction: Literal["inbound", "outbound"] | None = None


class RecordingOptions(Struct, kw_only=True):
    enabled: bool = False


class AgentTool(Struct, kw_only=True):
    name: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: Annotated[str, Meta(max_length=1024)] = ""
    parameters: dict[str, Any] = msgspec.field(default_factory=lambda: {"type": "object"})

    def __post_init__(self) -> None:
        if not _within_64_bits(self.parameters):  # what sharing it between workers (msgpack) can carry
            raise ValueError("a number in `parameters` is beyond 64 bits; a JSON Schema needs none that large")


def _within_64_bits(value: object) -> bool:
    """Whether every integer inside `value` (a decoded JSON value) fits in 64 bits. A loop, not recursion: the
    nesting is the client's to choose."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif type(item) is int and not -(2**63) <= item < 2**64:
            return False
    return True


SystemPrompt = Annotated[str, Meta(max_length=20000)]
Temperature = Annotated[float, Meta(ge=0, le=2)]
KnowledgeBaseId = Annotated[str, Meta(pattern=r"^kb_[A-Za-z0-9]+$")]
AgentId = Annotated[str, Meta(pattern=r"^agt_[A-Za-z0-9]+$")]


class AiAgentConfig(Struct, kw_only=True):
    system_prompt: SystemPrompt | None = None
    voice: Voice | None = None
    temperature: Temperature | None = None
    knowledge_base_id: KnowledgeBaseId | None = None
    tools: list[AgentTool] | None = None


class AudioHints(Struct, kw_only=True):
    """(r2) The transport hints of `POST /v1/sessions`: the stream carries only 8 kHz mono mu-law, so these
    defaults are the only values accepted."""

    encoding: Literal["mulaw"] = "mulaw"
    sample_rate_hz: Literal[8000] = 8000
    channels: Literal[1] = 1


class SessionCreate(Struct, kw_only=True):
    mode: Mode
    source_language: Language | None = None
    target_language: Language | None = None
    routing: Routing | None = None
    recording: RecordingOptions | None = None
    metadata: Metadata | None = None
    ai_agent: AiAgentConfig | None = None
    agent_id: AgentId | None = None
    overrides: AiAgentConfig | None = None
    audio: AudioHints | None = None


class SessionEndRequest(Struct, kw_only=True):
    """`POST /v1/sessions/{id}/end` takes an empty body or an empty object."""


# --- responses ------------------------------------------------------------------------------------------


class StreamInfo(Struct, kw_only=True):
    url: str
    token: str
    expires_at: str


class Session(Struct, kw_only=True):
    id: str
    object: Literal["session"] = "session"
    status: Status
    mode: Mode
    provider: Provider | None
    phone_number: str | None
    source_language: Language | None
    target_language: Language | None
    stream: StreamInfo | UnsetType = UNSET
    call: None = None  # (r2) the Quick Start shows it; the phone leg's details are not documented
    recording: RecordingOptions
    metadata: dict[str, str] | None  # (r2) null when the request had none
    created_at: str
    started_at: str | None
    ended_at: str | None


class EndedSession(Session, kw_only=True):
    """(r2) `session.ended` webhook data: the session object plus `duration` (seconds, one decimal)."""

    duration: float


class SessionSummary(Struct, kw_only=True):
    id: str
    object: Literal["session"] = "session"
    status: Literal["ended"] = "ended"
    duration_seconds: float
    ended_at: str


class Translation(Struct, kw_only=True):
    language: str
    text: str


class TranscriptTurn(Struct, kw_only=True):
    sequence: int
    speaker: Speaker
    language: str | None
    text: str
    translation: Translation | UnsetType = UNSET
    confidence: float
    timestamp: str
    source: Literal["ai"] | UnsetType = UNSET  # [emulator] as on its final: an AI agent's reply


class TranscriptMetadata(Struct, kw_only=True):
    total_turns: int
    duration_seconds: float
    languages_detected: list[str]


class Transcript(Struct, kw_only=True):
    id: str
    object: Literal["transcript"] = "transcript"
    session_id: str
    status: Literal["in_progress", "completed"]
    turns: list[TranscriptTurn]
    metadata: TranscriptMetadata


# --- other documented endpoints (kallglot-api.md §6): agents, recordings, analyses, dial ------------------


class AgentCreate(Struct, kw_only=True):
    """`POST /v1/agents`: a name plus the `ai_agent` fields of a session."""

    name: Annotated[str, Meta(min_length=1, max_length=256)]  # [emulator limit]
    system_prompt: SystemPrompt | None = None
    voice: Voice | None = None
    temperature: Temperature | None = None
    knowledge_base_id: KnowledgeBaseId | None = None
    tools: list[AgentTool] | None = None


class Agent(Struct, kw_only=True):
    id: str
    object: Literal["agent"] = "agent"
    name: str
    system_prompt: str | None
    voice: Voice | None
    temperature: float | None
    knowledge_base_id: str | None
    tools: list[AgentTool] | None
    created_at: str


class AgentList(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[Agent]
    has_more: bool


class Recording(Struct, kw_only=True):
    """(r2) The documented recording. [emulator] one per session with recording enabled, made when it ends: a
    stereo MP3 (customer left, agent right) of the audio the server received."""

    id: str
    object: Literal["recording"] = "recording"
    session_id: str
    channel: Literal["mixed"] = "mixed"
    status: Literal["processing", "ready", "failed"]
    duration: float  # seconds
    format: Literal["mp3"] = "mp3"
    size: int  # bytes of the MP3
    sample_rate: Literal[8000] = 8000
    bit_depth: Literal[16] = 16
    download_url: str | None  # relative: /v1/recordings/{id}/audio; null when the recording failed
    created_at: str
    expires_at: str  # 30 days after created_at, on the server clock
    failure_reason: str | UnsetType = UNSET  # only when failed


class RecordingDeleted(Struct, kw_only=True):
    """[emulator] `DELETE /v1/recordings/{id}` (scope `recordings:delete`)."""

    id: str
    object: Literal["recording"] = "recording"
    deleted: Literal[True] = True


class RecordingList(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[Recording]
    has_more: bool


AnalysisResult = Literal["summary", "sentiment", "compliance", "keywords", "performance"]
ANALYSIS_RESULTS = ("summary", "sentiment", "compliance", "keywords", "performance")
SentimentLabel = Literal["positive", "neutral", "negative"]


class AnalysisRequest(Struct, kw_only=True):
    """(r2) `POST /v1/sessions/{id}/analysis`: an empty body, or `profile` and `include` (default: all)."""

    profile: Annotated[str, Meta(min_length=1, max_length=64)] = "default"  # [emulator limit]
    include: list[AnalysisResult] | None = None


class AnalysisAccepted(Struct, kw_only=True):
    """The 202 answer: the analysis has started."""

    id: str
    object: Literal["analysis"] = "analysis"
    session_id: str
    status: Literal["processing"] = "processing"


class Sentiment(Struct, kw_only=True):
    customer: SentimentLabel
    agent: SentimentLabel


class ComplianceFlag(Struct, kw_only=True):
    code: Literal["card_number", "profanity"]
    turn: int
    speaker: Speaker


class Compliance(Struct, kw_only=True):
    status: Literal["ok", "flagged"]
    flags: list[ComplianceFlag]


class Performance(Struct, kw_only=True):
    """`score` is documented; the rest is [emulator] detail."""

    score: float  # 0..1
    total_turns: int
    turns_by_speaker: dict[str, int]
    talk_time_seconds: dict[str, float]
    talk_ratio: dict[str, float]
    average_confidence: float


class Analysis(Struct, kw_only=True):
    """(r2) The documented analysis: `processing`, then `completed` (the results `include` asked for; the others
    null) or `failed` (with `error`)."""

    id: str
    object: Literal["analysis"] = "analysis"
    session_id: str
    call_id: None = None
    profile: str
    status: Literal["processing", "completed", "failed"]
    summary: str | None
    sentiment: Sentiment | None
    compliance: Compliance | None
    keywords: list[str] | None
    performance: Performance | None
    error: str | None
    created_at: str
    completed_at: str | None


class DialRequest(Struct, kw_only=True):
    """`POST /v1/sessions/{id}/dial` takes an empty body or an empty object: it dials the session's `routing`."""


class Dial(Struct, kw_only=True):
    """[emulator] the answer to a dial: the outbound leg is being placed through the session's provider."""

    object: Literal["dial"] = "dial"
    session_id: str
    status: Literal["dialing"] = "dialing"
    provider: Provider
    to: str | None  # the routing's phone number or connection id; null for SIP


class ErrorDetail(Struct, kw_only=True):
    type: str
    code: str
    message: str
    param: str | None
    request_id: str | None
    retry_after: int | UnsetType = UNSET


class ErrorEnvelope(Struct, kw_only=True):
    error: ErrorDetail


# --- stream frames (kallglot-api.md §7) ----------------------------------------------------------------


class AudioFormat(Struct, kw_only=True):
    encoding: Literal["mulaw"] = "mulaw"
    sample_rate_hz: Literal[8000] = 8000


class AudioPayload(Struct, kw_only=True):
    """The audio of an `audio.input` frame: base64 of 8 kHz mono mu-law (`encoding: "mulaw"`, `sample_rate_hz:
    8000`; anything else is `invalid_audio_format`), 20-200 ms a frame, at most 64 KiB decoded."""

    encoding: str
    sample_rate_hz: int
    payload: str


class AudioInput(Struct, kw_only=True, tag="audio.input", tag_field="type"):
    """One speaker's audio. `sequence` (r2): any JSON number with an integer value (the Quick Start sends
    `Date.now()`); per speaker it must not go down; below the last accepted, or equal with audio already
    accepted at it, is a redelivery (`duplicate_sequence`, dropped). `speaker`: `customer` or `agent`."""

    sequence: int | float
    speaker: str
    audio: AudioPayload
    timestamp_ms: int | None = None


class Ping(Struct, tag="ping", tag_field="type"):
    """Answered by `pong`."""


class SessionEndFrame(Struct, tag="session.end", tag_field="type"):
    """Flush pending speech, then `session.ended` with reason `explicit_end`, then a close with 1000."""


ClientFrame = AudioInput | Ping | SessionEndFrame


class SessionReady(Struct, kw_only=True, tag="session.ready", tag_field="type"):
    """The first frame of a stream: the session's mode, its languages (the scenario's where the session left them
    to auto-detection) and the audio format both directions use."""

    session_id: str
    mode: Mode
    source_language: str | None
    target_language: str | None
    audio: AudioFormat = msgspec.field(default_factory=AudioFormat)


class TranscriptPartial(Struct, kw_only=True, tag="transcript.partial", tag_field="type"):
    """Speech in progress; `turn` is the number its final will have."""

    session_id: str
    turn: int
    speaker: Speaker
    language: str | None
    text: str


class TranscriptFinal(Struct, kw_only=True, tag="transcript.final", tag_field="type"):
    """A finished turn, also a transcript turn over REST. `start_ms`/`end_ms`: offsets in that speaker's audio.
    `translation`: absent where the mode does not translate. `source: "ai"` (r2): an AI agent's reply, spoken
    as `agent`."""

    session_id: str
    turn: int
    speaker: Speaker
    language: str | None
    text: str
    confidence: float
    translation: Translation | UnsetType = UNSET
    start_ms: int
    end_ms: int
    source: Literal["ai"] | UnsetType = UNSET  # (r2) on an AI agent's reply (speaker `agent`)


class OutputAudio(Struct, kw_only=True):
    encoding: Literal["mulaw"] = "mulaw"
    sample_rate_hz: Literal[8000] = 8000
    payload: str


class AudioOutput(Struct, kw_only=True, tag="audio.output", tag_field="type"):
    """Speech for `listener` to hear: the words of `speaker`'s turn `turn`, translated (or an AI agent's reply),
    after that turn's final, in `sequence` order per listener."""

    session_id: str
    turn: int
    speaker: Speaker
    listener: Speaker
    language: str | None
    sequence: int
    audio: OutputAudio


class Pong(Struct, kw_only=True, tag="pong", tag_field="type"):
    """The answer to `ping`."""

    session_id: str


class SessionEnded(Struct, kw_only=True, tag="session.ended", tag_field="type"):
    """The session is over (`reason`); the server closes the socket with 1000 next."""

    session_id: str
    reason: EndReason


class FrameError(Struct, kw_only=True):
    type: str
    code: str
    message: str
    param: str | None


class SessionError(Struct, kw_only=True, tag="session.error", tag_field="type"):
    """A bad frame (the stream goes on), a failed connect (then a close code of kallglot-api.md §7), or a worker
    sharing its state stopping (then 1012: reconnect)."""

    session_id: str
    error: FrameError


ServerFrame = SessionReady | TranscriptPartial | TranscriptFinal | AudioOutput | Pong | SessionEnded | SessionError


# --- the control plane (/_mockglot): not part of the Kallglot API ------------------------------------------


class Health(Struct, kw_only=True):
    status: Literal["ok"] = "ok"
    version: str
    engine: str
    sessions: int
    live_streams: int
    connections: int | None = None  # open sockets, HTTP and WebSocket (null when not served by uvicorn)
    max_connections: int | None = None  # past it, new sockets are closed at once
    hostname: str | None = None  # the machine (container, pod) that answered: behind a load balancer, which replica
    pid: int | None = None  # the process that answered: with --workers N, which worker
    workers: int = 1  # processes serving this address (--workers)


class ResetRequest(Struct, kw_only=True):
    organization: Annotated[str, Meta(min_length=1)] | None = None  # "" is no organization, not "everything"
    api_key: Annotated[str, Meta(min_length=1)] | None = None


class ResetResult(Struct, kw_only=True):
    reset: Literal["all", "organization"]
    organization: str | None = None


class ClockRequest(Struct, kw_only=True):
    set: str | float | None = None  # ISO-8601 or unix seconds; the clock stays within 2000-01-01..2100-01-01
    advance: Annotated[float, Meta(ge=-MAX_CLOCK_ADVANCE, le=MAX_CLOCK_ADVANCE)] | None = None  # may be negative
    reset: bool = False


class ClockState(Struct, kw_only=True):
    now: str
    unix: float
    offset_seconds: float


class SeedRequest(Struct, kw_only=True):
    seed: Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)] | None


class SeedState(Struct, kw_only=True):
    seed: int | None


class ControlSession(Struct, kw_only=True):
    id: str
    organization: str
    environment: str
    api_key: str  # redacted
    status: Status
    mode: Mode
    scenario: str
    engine: str
    connected: bool
    end_reason: EndReason | None
    turns: int
    audio_ms: dict[str, int]
    frames_in: int
    frames_out: int
    created_at: str
    source_language: str | None = None
    target_language: str | None = None
    duration_seconds: float = 0.0
    metadata: dict[str, str] = msgspec.field(default_factory=dict)


class JournalFrame(Struct, kw_only=True):
    index: int
    direction: Literal["in", "out"]
    at: str
    type: str
    frame: Any  # the decoded frame, or the raw text when it was not JSON (or was cut)
    truncated: bool = False  # the frame was longer than the journal keeps: `frame` is its beginning, as text
    unix: float = 0.0  # `at` to the millisecond, as unix seconds


class FrameJournal(Struct, kw_only=True):
    session_id: str
    count: int
    complete: bool  # False when ?wait_for timed out before enough frames arrived
    dropped: int = 0  # the session's oldest frames the journal no longer holds (past its cap); counts stay exact
    frames: list[JournalFrame]


class InjectRequest(Struct, kw_only=True):
    frame: dict[str, Any] | None = None
    raw: str | None = None


class Injected(Struct, kw_only=True):
    """The frame was queued on the session's stream (sent in order with the server's own frames)."""

    injected: Literal[True] = True


class Deleted(Struct, kw_only=True):
    """A control-plane delete: what was deleted (`id`; absent when all of a kind were), and `deleted: true`."""

    id: str | UnsetType = UNSET
    deleted: Literal[True] = True


class RequestRecord(Struct, kw_only=True):
    request_id: str
    at: str
    method: str
    path: str
    query: str
    status: int
    api_key: str | None  # redacted
    headers: dict[str, str]  # credentials redacted
    body: str
    duration_ms: float
    session_id: str | None = None  # the session in its path, or the one it created
    truncated: bool = False  # headers or body were cut to the journal's limits (see the README's Limits)
    unix: float | None = None  # `at` to the millisecond: the order of requests within a second


class RestFault(Struct, kw_only=True, forbid_unknown_fields=True):
    """Match REST requests by method, path (a glob such as /v1/sessions*) and key; answer with an error,
    add latency, or drop the connection."""

    method: str | None = None
    path: str | None = None
    api_key: str | None = None
    error_code: str | None = None
    status: Annotated[int, Meta(ge=400, le=599)] | None = None
    message: str | None = None
    latency_ms: Annotated[int, Meta(ge=0, le=600_000)] = 0
    drop: bool = False
    times: Annotated[int, Meta(ge=1, le=MAX_COUNT)] | None = 1  # None: every time
    probability: Annotated[float, Meta(ge=0, le=1)] = 1.0


class StreamFault(Struct, kw_only=True, forbid_unknown_fields=True):
    """Break a live stream after a number of client frames or finals.

    `close` closes with `close_code`; `error` sends a `session.error` with `error_code` and goes on; `stall`
    stops answering for `stall_ms`; `malformed` sends a frame that is not JSON.
    """

    action: Literal["close", "error", "stall", "malformed"]
    api_key: str | None = None  # only streams of sessions created with this key
    session_id: str | None = None  # only this session's streams
    after_frames: Annotated[int, Meta(ge=0, le=MAX_COUNT)] | None = None
    after_finals: Annotated[int, Meta(ge=0, le=MAX_COUNT)] | None = None
    close_code: Annotated[int, Meta(ge=1000, le=4999)] = 1011
    error_code: str = "internal_error"
    message: str | None = None
    stall_ms: Annotated[int, Meta(ge=0, le=600_000)] = 5000
    times: Annotated[int, Meta(ge=1, le=MAX_COUNT)] = 1
    probability: Annotated[float, Meta(ge=0, le=1)] = 1.0

    def due(self, frames: int, finals: int) -> bool:
        """Whether the fault's moment has come, after this many client frames and finals on the stream."""
        if self.after_finals is not None:
            return finals >= self.after_finals
        return frames >= (self.after_frames or 0)


Rule = TypeVar("Rule", bound=RestFault | StreamFault)


class FaultRecord(Struct, Generic[Rule], kw_only=True):
    """An armed fault: `FaultRecord[RestFault]` or `FaultRecord[StreamFault]` (the rule as it was armed)."""

    id: str
    kind: Literal["rest", "stream"]
    rule: Rule
    fired: int


class ScenarioUpload(Struct, kw_only=True):
    scenario: dict[str, Any] | None = None  # the scenario document as JSON
    yaml: str | None = None  # or as YAML text
    api_key: str | None = None  # scope the upload to this key's organization (only its sessions see it)
    organization: str | None = None  # or name the organization


class ScenarioInfo(Struct, kw_only=True):
    name: str
    description: str
    source: str
    source_language: str | None
    target_language: str | None
    turns: dict[str, int]
    organization: str | None = None  # an upload scoped to one organization; null: every organization sees it


class ScenarioView(Struct, kw_only=True):
    source: str
    scenario: dict[str, Any]  # the scenario document, as a file would hold it


class NextScenario(Struct, kw_only=True):
    api_key: str
    scenario: str
    # how many of the key's next sessions; null: until reset
    sessions: Annotated[int, Meta(ge=1, le=MAX_COUNT)] | None = 1


class KeyUpdate(Struct, kw_only=True, forbid_unknown_fields=True):
    key: str
    organization: str | None = None
    credits: Annotated[int, Meta(ge=0, le=MAX_CREDITS)] | None = None
    unlimited_credits: bool = False
    scopes: list[str] | None = None
    revoked: bool | None = None
    inactive: bool | None = None
    rate_limit: Annotated[int, Meta(ge=1, le=MAX_COUNT)] | None = None


class KeyInfo(Struct, kw_only=True):
    key: str  # redacted
    organization: str
    environment: str
    credits: int | None
    credits_used: int
    credits_remaining: int
    scopes: list[str]
    revoked: bool
    inactive: bool
    rate_limit: int | None


class ContractViolation(Struct, kw_only=True):
    kind: str  # unknown_field, missing_idempotency_key, ... (mockglot.state.contract.VIOLATIONS)
    count: int
    why: str  # what the contract says instead
    examples: list[str]  # at most 3


class ContractCoverage(Struct, kw_only=True):
    """What of the contract the client met: `METHOD /path/{param}`, frame types, error codes, close codes."""

    operations: dict[str, int]
    frames_in: dict[str, int]
    frames_out: dict[str, int]
    error_codes: dict[str, int]
    close_codes: dict[str, int]


class ContractReport(Struct, kw_only=True):
    organization: str | None  # null: every organization's, merged
    violations: list[ContractViolation]
    coverage: ContractCoverage


class ListOf(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[Any]


encoder = msgspec.json.Encoder()


def encode(value: object) -> bytes:
    return encoder.encode(value)


# --- webhooks (kallglot-api.md §8): the event envelope, and the control plane's endpoints and deliveries --

WEBHOOK_EVENTS = (
    "session.created",
    "session.started",
    "session.ended",
    "transcript.segment",
    "transcript.ready",
    "recording.ready",
    "recording.failed",
    "analysis.complete",
    "analysis.failed",
    "session.provider.connected",
    "session.provider.disconnected",
)
WebhookStatus = Literal["pending", "succeeded", "failed"]


class TranscriptSegment(TranscriptTurn, kw_only=True):
    """`transcript.segment` data: the transcript turn as REST shows it, plus its session [emulator]."""

    session_id: str


class WebhookEvent(Struct, kw_only=True):
    id: str
    type: str
    api_version: Literal["v1"] = "v1"
    created_at: str
    data: Any  # the resource as REST returns it: Session, TranscriptSegment, Transcript, Recording, Analysis


class WebhookEndpointCreate(Struct, kw_only=True, forbid_unknown_fields=True):
    """Register a receiver. `events` omitted: every event. `secret` omitted: one is generated (and shown once).
    `api_key` or `organization` limits the endpoint to that organization's events (default: every event)."""

    url: Annotated[str, Meta(min_length=1, max_length=2048)]
    events: list[str] | None = None
    secret: Annotated[str, Meta(min_length=1, max_length=512)] | None = None
    api_key: str | None = None
    organization: str | None = None


class WebhookEndpointInfo(Struct, kw_only=True):
    id: str
    url: str
    events: list[str] | None  # null: every event
    organization: str | None  # null: every organization
    source: Literal["settings", "control"]
    created_at: str
    secret: str | UnsetType = UNSET  # only in the registration's response


class WebhookAttempt(Struct, kw_only=True):
    retry_count: int  # the Kallglot-Retry-Count it was sent with
    at: str
    status_code: int | None  # null: no response (refused, timed out) or still in progress
    latency_ms: float | None  # null: still in progress
    error: str | None


class WebhookDelivery(Struct, kw_only=True):
    id: str
    endpoint_id: str
    event_id: str
    event_type: str
    session_id: str
    status: WebhookStatus
    created_at: str
    next_attempt_at: str | None
    redelivery_of: str | None
    attempts: list[WebhookAttempt]
    event: Any  # the envelope exactly as POSTed
