"""Fuzzing the REST API in-process: no input gives a 500, and every error is the documented envelope.

Hypothesis drives bodies, bytes, content types, auth and idempotency headers, paths and methods; schemathesis
drives the generated /openapi.json. Examples are kept modest so the file runs in well under a minute.
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import httpx
import msgspec
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import checks as sc

from mockglot import wire
from mockglot.app import create_app
from mockglot.errors import CATALOGUE
from mockglot.settings import Settings
from tests.fuzzing import check_response, content_types, header_bytes, json_values, session_bodies

APP = create_app(Settings(seed=11))
STRICT_APP = create_app(Settings(seed=12, strict=True))
PATHS_APP = create_app(Settings(seed=13))  # random paths may reach the control plane: keep its effects apart
KEY = "sk_test_fuzzfuzzfuzz01"
AUTH = {"Authorization": f"Bearer {KEY}"}
JSON_TYPE = {"Content-Type": "application/json"}
SESSION_FIELDS = {f.encode_name for f in msgspec.structs.fields(wire.SessionCreate)} | {"provider"}
VALIDATION_CODES = {code for code, kind in CATALOGUE.items() if kind.status == 422}
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


CLIENT = client_for(APP)
STRICT_CLIENT = client_for(STRICT_APP)
PATHS_CLIENT = client_for(PATHS_APP)


def a_session(app) -> str:
    state = app.state.mockglot
    key = state.keys.ensure(KEY)
    return state.sessions.create(key.owner, KEY, wire.SessionCreate(mode="ai_agent"), None).id


SESSION_ID = a_session(APP)
PATHS_SESSION_ID = a_session(PATHS_APP)


# --- strategies -------------------------------------------------------------------------------------------

key_headers = st.one_of(
    st.none(),
    header_bytes,
    st.builds(lambda b: b"Bearer " + b, header_bytes),
    st.just(f"Bearer {KEY}".encode()),
    st.just(KEY.encode()),
    st.from_regex(r"(Bearer )?sk_(live|test)_[A-Za-z0-9]{0,12}", fullmatch=True).map(str.encode),
)
segments = st.lists(
    st.one_of(
        st.sampled_from(
            ["v1", "sessions", "end", "transcript", "connect", "openapi.json", "_mockglot", PATHS_SESSION_ID]
        ),
        st.text(min_size=1, max_size=8),
    ),
    max_size=5,
)
methods = st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])


# --- hypothesis -------------------------------------------------------------------------------------------


@FUZZ
@given(body=json_values)
async def test_any_json_body_on_create(body):
    response = await CLIENT.post("/v1/sessions", content=json.dumps(body).encode(), headers={**AUTH, **JSON_TYPE})
    error = check_response(response)
    assert response.status_code in (201, 400, 422)
    if error and response.status_code == 400:
        assert error["code"] == "invalid_request"


@FUZZ
@given(body=session_bodies, strict=st.booleans())
async def test_session_shaped_bodies(body, strict):
    client = STRICT_CLIENT if strict else CLIENT
    response = await client.post("/v1/sessions", content=json.dumps(body).encode(), headers={**AUTH, **JSON_TYPE})
    error = check_response(response)
    assert response.status_code in (201, 400, 422), response.text
    if response.status_code == 201:
        session = response.json()
        assert session["mode"] == body["mode"]
        assert "provider" not in body
        assert session["metadata"] == body.get("metadata")  # (r2) null when absent, never {}
        assert response.headers.get("x-mockglot-warning", "").isprintable()
    elif response.status_code == 422:
        assert error["code"] in VALIDATION_CODES
        assert error["param"] is not None
        assert re.split(r"[.\[]", error["param"], maxsplit=1)[0] in SESSION_FIELDS | set(body)
        assert f"`{error['param']}`" in error["message"] or error["code"] in ("ai_agent_not_found", "invalid_routing")


@FUZZ
@given(top=st.dictionaries(st.text(max_size=12), json_values, max_size=3), nested=st.dictionaries(st.text(), st.text()))
async def test_extra_fields_of_any_name(top, nested):
    """Lenient mode ignores unknown fields, whatever their names, and says so in a header."""
    body = {**top, "mode": "bidirectional_translation", "routing": {**nested, "type": "sip"}}
    response = await CLIENT.post("/v1/sessions", content=json.dumps(body).encode(), headers={**AUTH, **JSON_TYPE})
    error = check_response(response)
    unknown = set(top) - SESSION_FIELDS | set(nested) - {"phone_number", "connection_id", "type", "sip", "direction"}
    if response.status_code == 201:
        warning = response.headers.get("x-mockglot-warning", "")
        assert warning.isprintable()
        assert bool(warning) == bool(unknown)
    elif response.status_code == 400:  # json.dumps writes NaN and Infinity, which are not JSON
        assert error["code"] == "invalid_request"
    else:
        assert response.status_code == 422
        assert set(top) & SESSION_FIELDS or set(nested) & {"phone_number", "connection_id", "sip", "direction"}


@FUZZ
@given(body=st.binary(max_size=200), content_type=content_types, path=st.sampled_from(["", f"/{SESSION_ID}/end"]))
async def test_random_bytes_and_content_types(body, content_type, path):
    response = await CLIENT.post(f"/v1/sessions{path}", content=body, headers={**AUTH, "Content-Type": content_type})
    check_response(response)
    assert response.status_code in (200, 201, 400, 422)


@FUZZ
@given(authorization=key_headers, api_key=key_headers, idempotency_key=st.none() | header_bytes)
async def test_random_auth_and_idempotency_headers(authorization, api_key, idempotency_key):
    headers = {"Content-Type": "application/json"}
    for name, value in (("Authorization", authorization), ("X-API-Key", api_key), ("Idempotency-Key", idempotency_key)):
        if value is not None:
            headers[name] = value
    response = await CLIENT.post("/v1/sessions", content=b'{"mode": "ai_agent", "ai_agent": {}}', headers=headers)
    error = check_response(response)
    assert response.status_code in (201, 400, 401)
    if response.status_code == 400:
        assert error["code"] == "idempotency_mismatch" or (
            error["code"] == "invalid_request" and not 0 < len((idempotency_key or "").strip()) <= 255
        )


@FUZZ
@given(method=methods, parts=segments, query=st.dictionaries(st.sampled_from(["format", "x"]), st.text(max_size=6)))
async def test_random_paths_and_methods(method, parts, query):
    path = "/" + "/".join(quote(part, safe="") for part in parts)
    content = b"{}" if method in ("POST", "PUT", "PATCH") else None
    response = await PATHS_CLIENT.request(
        method, path, params=query, content=content, headers={**AUTH, **JSON_TYPE} if content else AUTH
    )
    if 300 <= response.status_code < 400:
        # Starlette's redirect_slashes (see test_a_trailing_slash_is_an_unknown_route_not_a_redirect)
        assert path.endswith("/") and len(path) > 1
        return
    check_response(response)


# --- schemathesis -----------------------------------------------------------------------------------------

SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", APP)
CHECKS = [
    sc.not_a_server_error,
    sc.status_code_conformance,
    sc.content_type_conformance,
    sc.response_schema_conformance,
    sc.response_headers_conformance,
    sc.negative_data_rejection,
]


@SCHEMA.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_openapi_conformance(case):
    response = case.call_and_validate(headers=AUTH, checks=CHECKS)
    assert response.headers["x-request-id"][0].startswith("req_")


async def test_the_openapi_document_covers_the_sessions_api():
    document = (await CLIENT.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.1")
    assert {"post"} <= set(document["paths"]["/v1/sessions"])
    assert {"get"} <= set(document["paths"]["/v1/sessions/{session_id}"])
    assert {"post"} <= set(document["paths"]["/v1/sessions/{session_id}/end"])
    assert {"get"} <= set(document["paths"]["/v1/sessions/{session_id}/transcript"])
    assert len(list(SCHEMA.get_all_operations())) >= 4
