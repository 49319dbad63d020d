"""The contract report: what a client did that the contract does not allow, per organization, at
`/_mockglot/contract`; and in a user's pytest run, the summary and `--mockglot-strict-contract`."""

from __future__ import annotations

import textwrap
from typing import Any

import httpx
import pytest

from mockglot.settings import Settings
from mockglot.state import contract
from mockglot.testing.client import Client, silence, utterance
from mockglot.testing.server import ServerThread
from tests.test_plugin import ISOLATED_ENV
from tests.test_plugin import run as run_plugin_tests

pytest_plugins = ["pytester"]


def report(live: ServerThread, key: str, settle: float = 1.0) -> dict[str, Any]:
    params = {"api_key": key, "settle": settle}
    return httpx.get(f"{live.base_url}/_mockglot/contract", params=params).raise_for_status().json()


def violations(found: dict[str, Any]) -> dict[str, list[str]]:
    return {v["kind"]: v["examples"] for v in found["violations"]}


async def test_rest_violations_and_coverage(live, make_key):
    key = make_key()
    async with Client(live.base_url, key) as client:
        body = {"mode": "bidirectional_translation", "source_langauge": "de"}
        created = await client.http.post("/v1/sessions", json=body)
        assert created.status_code == 201  # lenient: the misspelling is ignored (the language is auto-detected)
        provider = await client.http.post("/v1/sessions", json={"mode": "bidirectional_translation", "provider": "x"})
        assert provider.status_code == 422
        token = created.json()["stream"]["token"]
        ok = await client.http.get(f"/v1/sessions/{created.json()['id']}", headers={"Idempotency-Key": "k"})
        assert ok.status_code == 200
        by_token = {"Authorization": f"Bearer {token}"}
        as_token = await client.http.get(f"/v1/sessions/{created.json()['id']}", headers=by_token)
        assert as_token.status_code == 401
        await client.http.get("/v1/nowhere")
        keyed = {"Idempotency-Key": "once"}
        assert (await client.http.post("/v1/sessions", json={"mode": "ai_agent"}, headers=keyed)).status_code == 422
    found = report(live, key)
    assert violations(found) == {
        "unknown_field": ["POST /v1/sessions: `source_langauge`"],
        "missing_idempotency_key": ["POST /v1/sessions"],
        "top_level_provider": ["POST /v1/sessions: `provider`"],
        "stream_token_on_rest": [f"GET /v1/sessions/{created.json()['id']}"],
    }
    counts = {v["kind"]: v["count"] for v in found["violations"]}
    assert counts["missing_idempotency_key"] == 2  # the keyed create is not counted
    assert found["coverage"]["operations"] == {
        "POST /v1/sessions": 3,
        "GET /v1/sessions/{session_id}": 2,
        "(unknown route)": 1,
    }
    assert found["coverage"]["error_codes"] == {
        "invalid_field_value": 1,
        "invalid_api_key": 1,
        "route_not_found": 1,
        "missing_required_field": 1,
    }
    other = report(live, make_key())
    assert other["violations"] == [] and other["coverage"]["operations"] == {}  # nothing leaks between keys


async def test_strict_mode_reports_the_refused_unknown_field(make_key):
    key = make_key()
    with ServerThread(Settings(port=0, strict=True)) as strict:
        async with Client(strict.base_url, key) as client:
            body = {"mode": "bidirectional_translation", "source_langauge": "de"}
            response = await client.http.post("/v1/sessions", json=body, headers={"Idempotency-Key": "a"})
            assert response.status_code == 422
        assert violations(report(strict, key)) == {"unknown_field": ["POST /v1/sessions: `source_langauge`"]}


async def test_stream_violations_and_coverage(live, make_key):
    key = make_key()
    async with Client(live.base_url, key) as client:
        session = await client.create_session()
        stream = await client.open_stream(session)
        await stream.until("session.ready")
        await stream.send_json({"type": "audio", "payload": "AAAA"})  # the old documentation's frame
        await stream.send_json({"type": "ping", "sequnce": 1})
        await stream.send_audio("customer", utterance(), frame_ms=500)  # 500 ms frames
        await stream.send_audio("customer", silence(100), frame_ms=10)  # 10 ms frames
        await stream.send_json({"type": "ping"})
        await stream.until("pong")
        await stream.until("pong")
        await stream.ws.close()  # without session.end

        ended = await client.create_session()
        polite = await client.open_stream(ended)
        await polite.end()
        refused = await client.open_stream(ended)  # the session has ended: 4009
        await refused.drain()
    found = report(live, key)
    assert violations(found) == {
        "old_frame_type": ['`type: "audio"` (today: audio.input)'],
        "unknown_field": ["ping frame: `sequnce`"],
        "audio_frame_duration": ["a 500 ms frame (4000 bytes)", "a 400 ms frame (3200 bytes)",
                                 "a 10 ms frame (80 bytes)"],
        "stream_without_session_end": [f"session {session['id']}"],
    }  # fmt: skip
    coverage = found["coverage"]
    assert set(coverage["frames_in"]) == {"(invalid)", "ping", "audio.input", "session.end"}
    assert {"session.ready", "session.error", "pong", "session.ended"} <= set(coverage["frames_out"])
    assert coverage["error_codes"] == {"invalid_message": 1, "session_ended": 1}
    assert coverage["close_codes"] == {"1000": 1, "4009": 1}


async def test_reset_forgets_the_organization_only(live, make_key):
    mine, theirs = make_key(), make_key()
    for key in (mine, theirs):
        async with Client(live.base_url, key) as client:
            await client.http.post("/v1/sessions", json={"mode": "bidirectional_translation"})  # no Idempotency-Key
    httpx.post(f"{live.base_url}/_mockglot/reset", json={"api_key": mine}).raise_for_status()
    assert report(live, mine)["violations"] == []
    assert violations(report(live, theirs)) == {"missing_idempotency_key": ["POST /v1/sessions"]}
    everyone = httpx.get(f"{live.base_url}/_mockglot/contract").json()
    assert everyone["organization"] is None and everyone["violations"]


def test_the_ledgers_are_bounded(monkeypatch):
    monkeypatch.setattr(contract, "MAX_ORGANIZATIONS", 3)
    reports = contract.ContractReports()
    for i in range(5):
        ledger = reports.ledger(f"org{i}")
        for n in range(contract.MAX_KINDS + 10):
            contract.bump(ledger.operations, f"op{n}")
            ledger.violation("unknown_field", f"field{n}")
    assert reports.report("org0").coverage.operations == {}  # the least recently used went first
    kept = reports.report("org4")
    assert len(kept.coverage.operations) == contract.MAX_KINDS
    assert kept.violations[0].count == contract.MAX_KINDS + 10
    assert len(kept.violations[0].examples) == contract.MAX_EXAMPLES


# --- in a user's pytest run ---------------------------------------------------------------------------------

USER_TESTS = """
    import httpx

    def test_creates_with_a_typo(mockglot):
        body = {"mode": "bidirectional_translation", "source_langauge": "de"}
        response = httpx.post(f"{mockglot.base_url}/v1/sessions", json=body, headers=mockglot.headers)
        assert response.status_code == 201

    def test_creates_by_the_book(mockglot):
        body = {"mode": "bidirectional_translation", "source_language": "de"}
        headers = {**mockglot.headers, "Idempotency-Key": "order-1"}
        response = httpx.post(f"{mockglot.base_url}/v1/sessions", json=body, headers=headers)
        assert response.status_code == 201
"""


@pytest.fixture
def user_project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    for name in ISOLATED_ENV:
        monkeypatch.delenv(name, raising=False)
    pytester.makepyfile(test_user=textwrap.dedent(USER_TESTS))
    return pytester


def run(project: pytest.Pytester, *args: str) -> pytest.RunResult:
    return run_plugin_tests(project, "-p", "no:randomly", *args)


def test_the_run_ends_with_the_report(user_project):
    result = run(user_project)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "*mockglot contract report*",
            "2 kind(s) of violation*",
            "  missing_idempotency_key x1: POST /v1/sessions",
            "      in test_user.py::test_creates_with_a_typo",
            "  unknown_field x1: POST /v1/sessions: `source_langauge`",
            "      in test_user.py::test_creates_with_a_typo",
            "coverage over 2 test(s):",
            "  operations (1 of *): POST /v1/sessions",
        ]
    )
    assert "test_creates_by_the_book" not in result.stdout.str()


def test_strict_mode_fails_the_test_that_broke_the_contract(user_project):
    result = run(user_project, "--mockglot-strict-contract")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_creates_with_a_typo _*",
            "mockglot contract (--mockglot-strict-contract): this test's client did what the contract does not allow:",
            "  missing_idempotency_key x1: POST /v1/sessions",
            "*unknown_field x1: POST /v1/sessions: `source_langauge`",
            "FAILED test_user.py::test_creates_with_a_typo*",
        ]
    )


def test_the_report_under_xdist_and_its_opt_out(user_project):
    spread = run(user_project, "-n", "2")
    spread.assert_outcomes(passed=2)
    spread.stdout.fnmatch_lines(
        ["*mockglot contract report*", "  unknown_field x1: POST /v1/sessions: `source_langauge`"]
    )
    quiet = run(user_project, "--mockglot-no-contract-report")
    quiet.assert_outcomes(passed=2)
    assert "contract report" not in quiet.stdout.str()
