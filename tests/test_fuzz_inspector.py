"""The inspector's inputs under hypothesis: event-stream filters and Last-Event-ID, inspector paths, the sign-in
form. Never a 500, never a page that echoes input unescaped."""

from __future__ import annotations

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mockglot.app import create_app
from mockglot.inspector import auth
from mockglot.settings import Settings

TOKEN = "fuzz-control-token"
APP = create_app(Settings(seed=21, control_token=TOKEN))
CLIENT = httpx.AsyncClient(transport=httpx.ASGITransport(app=APP), base_url="http://testserver")
SIGNED_IN = {"Cookie": f"{auth.COOKIE}={auth.cookie_value(TOKEN)}"}
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
latin1 = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=40)
params = st.dictionaries(
    st.sampled_from(["session_id", "organization", "api_key", "types", "last_event_id", "other"]),
    st.text(max_size=300),
    max_size=4,
)


@FUZZ
@given(query=params, last_event_id=st.none() | latin1, signed_in=st.booleans())
async def test_event_stream_parameters_never_fail_the_server(query, last_event_id, signed_in):
    headers = {
        **(SIGNED_IN if signed_in else {}),
        **({} if last_event_id is None else {"Last-Event-ID": last_event_id.encode("latin-1")}),
    }
    response = await CLIENT.head("/_mockglot/events", params=query, headers=headers)  # HEAD: no stream to follow
    assert response.status_code in (200, 401, 422), response.text
    if not signed_in:
        assert response.status_code == 401


MARKUP = "<i data-fuzz>"


@FUZZ
@given(path=st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=60), signed_in=st.booleans())
async def test_inspector_paths_never_fail_and_never_echo_markup(path, signed_in):
    """Every path ends in a tag that no page holds of its own, so finding it raw means the path was echoed raw
    (a generated `<` alone is in every page's own markup and proves nothing)."""
    path += MARKUP
    response = await CLIENT.get("/_mockglot/ui/" + path.replace("?", "%3F").replace("#", "%23"),
                                headers=SIGNED_IN if signed_in else {})  # fmt: skip
    assert response.status_code in (200, 303, 401, 404), response.text
    if response.headers.get("content-type", "").startswith("text/html"):
        assert MARKUP not in response.text and path not in response.text


@FUZZ
@given(body=st.binary(max_size=300), content_type=st.sampled_from(["application/x-www-form-urlencoded", "text/plain"]))
async def test_the_sign_in_form_takes_any_body(body, content_type):
    response = await CLIENT.post("/_mockglot/ui/sign-in", content=body, headers={"Content-Type": content_type})
    assert response.status_code in (303, 401)
    assert TOKEN not in response.text
