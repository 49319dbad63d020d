"""The contract report: what each organization's client did that the Kallglot contract does not allow, or that
only the emulator tolerates, and what of the contract it met (operations, frame types, error and close codes).

Observations come from the REST instrumentation and the stream; the report is read at `/_mockglot/contract` and
printed by the pytest plugin. Bounded: at most `MAX_ORGANIZATIONS` ledgers (the least recently used go first),
`MAX_KINDS` entries in each table of a ledger and `MAX_EXAMPLES` examples per violation.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

from mockglot import wire

MAX_ORGANIZATIONS = 10_000
MAX_KINDS = 64
MAX_EXAMPLES = 3
MAX_EXAMPLE_CHARS = 200
FRAME_MS_RANGE = (20, 200)
BYTES_PER_MS = 8  # 8 kHz mu-law
OLD_FRAME_TYPES = {"audio": "audio.input"}  # the old documentation generation's frame types -> today's
OLD_TYPE = re.compile(r'"type"\s*:\s*"(' + "|".join(map(re.escape, OLD_FRAME_TYPES)) + ')"')

# Each kind of violation, and what to do instead.
VIOLATIONS: dict[str, str] = {
    "unknown_field": "a field the contract does not define (a misspelling?); the real API rejects or ignores it",
    "top_level_provider": "a top-level `provider` (the old documentation): give the destination in `routing`",
    "stream_token_on_rest": "a stream token (kst_...) on REST: REST takes the API key (sk_...), the stream the token",
    "missing_idempotency_key": "POST /v1/sessions without Idempotency-Key: a retry after a timeout makes a second "
    "session (and spends a second credit)",
    "old_frame_type": 'a frame of the old documentation (`type: "audio"`): send `audio.input`',
    "audio_frame_duration": "an audio.input frame outside 20-200 ms (160-1600 bytes of 8 kHz mu-law)",
    "stream_without_session_end": "a stream closed without `session.end`: pending speech is lost; send "
    "session.end and wait for session.ended",
}


def bump(table: dict[Any, int], key: Any) -> None:
    """Count `key`; a table full of other keys counts nothing new (bounded)."""
    if key in table or len(table) < MAX_KINDS:
        table[key] = table.get(key, 0) + 1


class Ledger:
    """One organization's observations."""

    __slots__ = ("close_codes", "error_codes", "examples", "frames_in", "frames_out", "operations", "violations")

    def __init__(self) -> None:
        self.violations: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}
        self.operations: dict[str, int] = {}
        self.frames_in: dict[str, int] = {}
        self.frames_out: dict[str, int] = {}
        self.error_codes: dict[str, int] = {}
        self.close_codes: dict[int, int] = {}

    def violation(self, kind: str, example: str) -> None:
        bump(self.violations, kind)
        examples = self.examples.setdefault(kind, [])
        example = example[:MAX_EXAMPLE_CHARS]
        if len(examples) < MAX_EXAMPLES and example not in examples:
            examples.append(example)

    def report(self, organization: str | None) -> wire.ContractReport:
        return wire.ContractReport(
            organization=organization,
            violations=[
                wire.ContractViolation(kind=kind, count=count, why=VIOLATIONS[kind], examples=self.examples[kind])
                for kind, count in self.violations.items()
            ],
            coverage=wire.ContractCoverage(
                operations=dict(self.operations),
                frames_in=dict(self.frames_in),
                frames_out=dict(self.frames_out),
                error_codes=dict(self.error_codes),
                close_codes={str(code): n for code, n in self.close_codes.items()},
            ),
        )

    def merge(self, other: Ledger) -> None:
        for kind, count in other.violations.items():
            for example in other.examples[kind]:
                self.violation(kind, example)
            self.violations[kind] += count - 1
        tables: list[tuple[dict[Any, int], dict[Any, int]]] = [
            (self.operations, other.operations),
            (self.frames_in, other.frames_in),
            (self.frames_out, other.frames_out),
            (self.error_codes, other.error_codes),
            (self.close_codes, other.close_codes),
        ]
        for mine, theirs in tables:
            for key, count in theirs.items():
                if key in mine or len(mine) < MAX_KINDS:
                    mine[key] = mine.get(key, 0) + count


class ContractReports:
    """Every organization's ledger."""

    def __init__(self) -> None:
        self._ledgers: OrderedDict[str, Ledger] = OrderedDict()

    def ledger(self, organization: str) -> Ledger:
        ledger = self._ledgers.get(organization)
        if ledger is None:
            ledger = self._ledgers[organization] = Ledger()
            if len(self._ledgers) > MAX_ORGANIZATIONS:
                self._ledgers.popitem(last=False)
        else:
            self._ledgers.move_to_end(organization)
        return ledger

    def reset(self, organization: str | None = None) -> None:
        if organization is None:
            self._ledgers.clear()
        else:
            self._ledgers.pop(organization, None)

    def report(self, organization: str | None = None) -> wire.ContractReport:
        """One organization's report, or every organization's merged (organization null)."""
        if organization is not None:
            ledger = self._ledgers.get(organization) or Ledger()
            return ledger.report(organization)
        merged = Ledger()
        for ledger in self._ledgers.values():
            merged.merge(ledger)
        return merged.report(None)

    def stream(self, organization: str, session_id: str) -> StreamObserver:
        return StreamObserver(self.ledger(organization), session_id)


class StreamObserver:
    """What one stream connection's client did: fed by the stream handler, written to the organization's ledger."""

    __slots__ = ("checked_types", "ledger", "sent_end", "session_id")

    def __init__(self, ledger: Ledger, session_id: str) -> None:
        self.ledger = ledger
        self.session_id = session_id
        self.sent_end = False
        self.checked_types: set[str] = set()

    def frame_in(self, kind: str, unknown: list[str] | None) -> None:
        """A valid client frame; `unknown` is its undefined fields when they were looked for."""
        bump(self.ledger.frames_in, kind)
        if kind == "session.end":
            self.sent_end = True
        for name in unknown or ():
            self.ledger.violation("unknown_field", f"{kind} frame: `{name}`")

    def wants_check(self, kind: str) -> bool:
        """Unknown fields are looked for in the first frame of each type: a client builds them all alike."""
        if kind in self.checked_types:
            return False
        self.checked_types.add(kind)
        return True

    def invalid_frame(self, text: str) -> None:
        """A frame the stream refused (`text` empty for a binary one); read by a pattern, never decoded again."""
        bump(self.ledger.frames_in, "(invalid)")
        old = OLD_TYPE.search(text)
        if old is not None:
            kind = old[1]
            self.ledger.violation("old_frame_type", f'`type: "{kind}"` (today: {OLD_FRAME_TYPES[kind]})')

    def audio(self, payload_bytes: int) -> None:
        ms = payload_bytes / BYTES_PER_MS
        if not FRAME_MS_RANGE[0] <= ms <= FRAME_MS_RANGE[1]:
            self.ledger.violation("audio_frame_duration", f"a {ms:g} ms frame ({payload_bytes} bytes)")

    def frame_out(self, kind: str) -> None:
        bump(self.ledger.frames_out, kind)

    def error(self, code: str) -> None:
        bump(self.ledger.error_codes, code)

    def closed(self, close_code: int | None, ended: bool) -> None:
        """The connection is over: `close_code` the server's (None: the client closed first); `ended`: the
        session ended while it was open (session.end, REST end, idle)."""
        if close_code is not None:
            bump(self.ledger.close_codes, close_code)
        if not ended and not self.sent_end and close_code is None:
            self.ledger.violation("stream_without_session_end", f"session {self.session_id}")
