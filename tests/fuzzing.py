"""What the fuzz tests share: the check every response must pass, and strategies for request bodies."""

from __future__ import annotations

import re

import httpx
from hypothesis import strategies as st

from mockglot import wire
from mockglot.errors import CATALOGUE

ERROR_KEYS = {"type", "code", "message", "param", "request_id"}


def check_response(response: httpx.Response, faults_armed: bool = False) -> dict | None:
    """Every response: a request id, never a 500; every error: the envelope, consistent with the catalogue.

    With `faults_armed`, a 5xx is allowed when it is a fault the test armed (and says so)."""
    assert response.status_code < 500 or (faults_armed and "Injected fault" in response.text), response.text
    request_id = response.headers.get("x-request-id", "")
    assert re.fullmatch(r"req_[0-9A-Z]{26}", request_id)
    if response.status_code < 400 or response.request.method == "HEAD":
        return None
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    error = body["error"]
    assert ERROR_KEYS <= set(error) <= ERROR_KEYS | {"retry_after"}
    kind = CATALOGUE[error["code"]]
    assert (kind.status, kind.type) == (response.status_code, error["type"])
    assert error["request_id"] == request_id
    assert isinstance(error["message"], str) and error["message"]
    assert error["param"] is None or isinstance(error["param"], str)
    if "retry_after" in error:
        assert response.status_code in (409, 429) or (faults_armed and response.status_code == 503)
        assert response.headers["retry-after"] == str(error["retry_after"])
    return error


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def valid_or_junk(valid: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(valid, json_values)


languages = st.sampled_from([*wire.LANGUAGES, None])
routing = st.fixed_dictionaries(
    {},
    optional={
        "phone_number": valid_or_junk(st.from_regex(r"\+[1-9][0-9]{1,14}", fullmatch=True)),
        "connection_id": valid_or_junk(st.from_regex(r"pcon_[a-z0-9]{1,6}", fullmatch=True)),
        "type": valid_or_junk(st.just("sip")),
        "sip": valid_or_junk(
            st.fixed_dictionaries(
                {},
                optional={
                    "from_uri": valid_or_junk(st.just("sip:alice@example.com")),
                    "headers": valid_or_junk(
                        st.dictionaries(st.from_regex(r"X-[A-Za-z]{1,5}", fullmatch=True), st.text(max_size=5))
                    ),
                },
            )
        ),
        "direction": valid_or_junk(st.sampled_from(["inbound", "outbound"])),
    },
)
agent = st.fixed_dictionaries(
    {},
    optional={
        "system_prompt": valid_or_junk(st.text(max_size=20)),
        "voice": valid_or_junk(st.sampled_from(["alloy", "echo", "fable", "onyx", "nova", "shimmer"])),
        "temperature": valid_or_junk(st.floats(min_value=-1, max_value=3)),
        "knowledge_base_id": valid_or_junk(st.from_regex(r"kb_[a-z0-9]{1,5}", fullmatch=True)),
        "tools": valid_or_junk(
            st.lists(
                st.fixed_dictionaries(
                    {"name": valid_or_junk(st.from_regex(r"[a-z_]{1,10}", fullmatch=True))},
                    optional={"description": valid_or_junk(st.text(max_size=10)), "parameters": json_values},
                ),
                max_size=2,
            )
        ),
    },
)
session_bodies = st.fixed_dictionaries(
    {},
    optional={
        "mode": valid_or_junk(st.sampled_from(wire.MODES)),
        "source_language": valid_or_junk(languages),
        "target_language": valid_or_junk(languages),
        "routing": valid_or_junk(routing),
        "recording": valid_or_junk(st.fixed_dictionaries({}, optional={"enabled": valid_or_junk(st.booleans())})),
        "metadata": valid_or_junk(
            st.dictionaries(st.text(max_size=42), valid_or_junk(st.text(max_size=10)), max_size=6)
        ),
        "ai_agent": valid_or_junk(agent),
        "agent_id": valid_or_junk(st.from_regex(r"agt_[a-z0-9]{1,5}", fullmatch=True)),
        "overrides": valid_or_junk(agent),
        "audio": valid_or_junk(
            st.fixed_dictionaries(
                {},
                optional={
                    "encoding": valid_or_junk(st.sampled_from(["mulaw", "pcm16"])),
                    "sample_rate_hz": valid_or_junk(st.sampled_from([8000, 16000])),
                    "channels": valid_or_junk(st.sampled_from([1, 2])),
                },
            )
        ),
        "provider": st.sampled_from(["twilio", "sip"]),
        "unknown_extra": json_values,
    },
)
content_types = st.one_of(
    st.sampled_from(
        ["application/json", "application/json; charset=utf-8", "text/plain", "", "application/x-www-form-urlencoded"]
    ),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
)
header_bytes = st.binary(max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b)
