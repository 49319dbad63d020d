"""A hypothesis state machine over REST and real streams with retention at work (#10).

Two tenants create, stream, end, read and reset sessions on one real server that keeps only the last
`RETAIN` ended sessions, while the clock moves (in and out of its range) and bad requests arrive. The model
predicts which sessions exist; every response is checked against it. Invariants: never a 500, nothing logged
at ERROR (no unhandled exception), every frame a client sent counted once (`frames_in`), and the transcript's
turns exactly the finals the stream delivered, in order, none lost or doubled. A forgotten session answers
`404 session_not_found` on every path. `bench/stateful.py` runs the same machine for longer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, precondition, rule
from websockets.sync.client import connect

from mockglot.settings import Settings
from mockglot.testing.client import audio_frame, chunks, utterance
from mockglot.testing.server import ServerThread

RETAIN = 3
KEYS = ("sk_test_statefulaaaa01", "sk_test_statefulbbbb02")
BODY = {"mode": "bidirectional_translation", "source_language": "de", "target_language": "en"}


class ErrorLog(logging.Handler):
    """Every record at ERROR or above, or carrying an exception, from any logger the server writes to."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)


@pytest.fixture(scope="module")
def retaining() -> Iterator[tuple[ServerThread, ErrorLog]]:
    errors = ErrorLog()
    loggers = [logging.getLogger(name) for name in ("", "uvicorn", "uvicorn.error", "mockglot")]
    with ServerThread(Settings(port=0, output_pace="instant", retain_sessions=RETAIN)) as server:
        for logger in loggers:
            logger.addHandler(errors)
        try:
            yield server, errors
        finally:
            for logger in loggers:
                logger.removeHandler(errors)


class Sessions(RuleBasedStateMachine):
    server: ServerThread
    errors: ErrorLog
    created = Bundle("created")  # live, never connected
    known = Bundle("known")  # every id ever made (some forgotten since)

    def __init__(self) -> None:
        super().__init__()
        self.http = httpx.Client(base_url=self.server.base_url, timeout=30)
        for key in KEYS:  # each example starts from empty organizations
            self.http.post("/_mockglot/reset", json={"api_key": key})
        self.owner: dict[str, str] = {}  # session id -> key
        self.live: set[str] = set()
        self.ended: list[str] = []  # retained, in the order they ended: at most RETAIN
        self.gone: set[str] = set()
        self.turns: dict[str, list[tuple[int, str, str]]] = {}  # the finals each stream delivered

    def teardown(self) -> None:
        self.http.post("/_mockglot/clock", json={"reset": True})
        self.http.close()

    # --- the model ------------------------------------------------------------------------------------

    def exists(self, session_id: str) -> bool:
        return session_id in self.live or session_id in self.ended

    def _ended(self, session_id: str) -> None:
        self.live.discard(session_id)
        self.ended.append(session_id)
        while len(self.ended) > RETAIN:  # evicted: gone for good, whatever a reset removes later
            self.gone.add(self.ended.pop(0))

    def request(self, method: str, path: str, key: str | None = None, **kwargs: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        headers.update(kwargs.pop("headers", {}))  # type: ignore[arg-type]
        response = self.http.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]
        assert response.status_code < 500, (method, path, response.status_code, response.text)
        return response

    # --- rules ----------------------------------------------------------------------------------------

    @rule(target=created, key=st.sampled_from(KEYS), recorded=st.booleans())
    def create(self, key: str, recorded: bool) -> str:
        body = {**BODY, "recording": {"enabled": True}} if recorded else BODY
        response = self.request("POST", "/v1/sessions", key, json=body)
        assert response.status_code == 201, response.text
        session = response.json()
        self.owner[session["id"]] = key
        self.live.add(session["id"])
        return session["id"]

    @rule(target=known, session_id=consumes(created), utterances=st.integers(0, 2), pings=st.integers(0, 3))
    def stream(self, session_id: str, utterances: int, pings: int) -> str:
        """A whole call over a real WebSocket: speech, pings, session.end, read to the close."""
        if not self.exists(session_id):  # reset meanwhile
            return session_id
        session = self.request("GET", f"/v1/sessions/{session_id}", self.owner[session_id]).json()  # a fresh token
        url = f"{self.server.ws_url}/v1/sessions/{session_id}/connect?token={session['stream']['token']}"
        sent = 0
        finals: list[tuple[int, str, str]] = []
        with connect(url, compression=None) as ws:
            assert msgspec.json.decode(ws.recv(10))["type"] == "session.ready"
            audio = b"".join(utterance() for _ in range(utterances))
            for sequence, chunk in enumerate(chunks(audio), start=1):
                ws.send(audio_frame("customer", sequence, chunk, (sequence - 1) * 100))
                sent += 1
            for _ in range(pings):
                ws.send('{"type": "ping"}')
                sent += 1
            ws.send('{"type": "session.end"}')
            sent += 1
            for message in ws:
                frame = msgspec.json.decode(message)
                assert frame["type"] != "session.error", frame
                if frame["type"] == "transcript.final":
                    finals.append((frame["turn"], frame["speaker"], frame["text"]))
        self._ended(session_id)
        self.turns[session_id] = finals
        info = self.request("GET", f"/_mockglot/sessions/{session_id}")
        assert info.status_code == 200, info.text
        assert info.json()["frames_in"] == sent  # every frame counted, once
        assert [turn for turn, _, _ in finals] == list(range(1, len(finals) + 1))
        self.check_transcript(session_id)
        return session_id

    @rule(target=known, session_id=consumes(created))
    def end_over_rest(self, session_id: str) -> str:
        response = self.request("POST", f"/v1/sessions/{session_id}/end", self.owner[session_id])
        if not self.exists(session_id):
            assert response.status_code == 404
            return session_id
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "ended"
        self._ended(session_id)
        self.turns[session_id] = []
        return session_id

    @rule(session_id=st.one_of(created, known))
    def read(self, session_id: str) -> None:
        key = self.owner[session_id]
        for path in (f"/v1/sessions/{session_id}", f"/v1/sessions/{session_id}/transcript"):
            response = self.request("GET", path, key)
            if self.exists(session_id):
                assert response.status_code == 200, response.text
            else:
                assert response.status_code == 404 and response.json()["error"]["code"] == "session_not_found"
        control = self.request("GET", f"/_mockglot/sessions/{session_id}/frames")
        assert control.status_code == (200 if self.exists(session_id) else 404)
        if self.exists(session_id) and session_id in self.turns:
            self.check_transcript(session_id)

    @rule(session_id=st.one_of(created, known))
    def another_tenant_cannot_see_it(self, session_id: str) -> None:
        other = next(k for k in KEYS if k != self.owner[session_id])
        response = self.request("GET", f"/v1/sessions/{session_id}", other)
        assert response.status_code == 404

    @rule(key=st.sampled_from(KEYS))
    def reset_one_organization(self, key: str) -> None:
        assert self.request("POST", "/_mockglot/reset", json={"api_key": key}).status_code == 200
        for session_id, owner in self.owner.items():
            if owner == key and self.exists(session_id):
                self.live.discard(session_id)
                self.gone.add(session_id)
                if session_id in self.ended:
                    self.ended.remove(session_id)

    @rule(seconds=st.one_of(st.floats(-120, 120), st.sampled_from([1e300, -1e300, 4e9])))
    def move_the_clock(self, seconds: float) -> None:
        response = self.request("POST", "/_mockglot/clock", json={"advance": seconds})
        assert response.status_code == (200 if abs(seconds) <= 120 else 422), response.text

    @rule(body=st.one_of(st.text(max_size=30), st.binary(max_size=30)), path=st.sampled_from(
        ["/v1/sessions", "/v1/agents", "/_mockglot/clock", "/_mockglot/faults/rest"]  # not reset: no body resets all
    ))  # fmt: skip
    def bad_body(self, body: str | bytes, path: str) -> None:
        self.request("POST", path, KEYS[0], content=body, headers={"Content-Type": "application/json"})

    # --- invariants -----------------------------------------------------------------------------------

    def check_transcript(self, session_id: str) -> None:
        response = self.request("GET", f"/v1/sessions/{session_id}/transcript", self.owner[session_id])
        assert response.status_code == 200, response.text
        turns = [(t["sequence"], t["speaker"], t["text"]) for t in response.json()["turns"]]
        assert turns == self.turns[session_id]  # none lost, none doubled, in order

    @precondition(lambda self: bool(self.owner))
    @invariant()
    def health_counts_what_the_model_holds(self) -> None:
        sessions = self.request("GET", "/_mockglot/health").json()["sessions"]
        assert sessions == len(self.live) + len(self.ended)

    @invariant()
    def nothing_logged_as_an_error(self) -> None:
        assert not self.errors.records, [r.getMessage() for r in self.errors.records]


def test_rest_and_streams_with_evictions_never_fail_lose_or_double(retaining) -> None:
    Sessions.server, Sessions.errors = retaining
    Sessions.TestCase.settings = settings(
        max_examples=8, stateful_step_count=14, deadline=None, suppress_health_check=list(HealthCheck)
    )
    Sessions.TestCase().runTest()
