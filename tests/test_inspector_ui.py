"""`/_mockglot/ui` without a browser: the sign-in, the cookie, what an unsigned visitor sees, escaping, 404s."""

from __future__ import annotations

import httpx
import pytest

from mockglot.inspector import auth
from mockglot.inspector.ui import STATIC, _static
from tests.checks import expect_error

TOKEN = "ui-control-token-0123456789"
BASE = "http://testserver"


@pytest.fixture
async def ui(make_app):
    app = make_app(control_token=TOKEN)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        client.app = app  # type: ignore[attr-defined]
        yield client


async def sign_in(client: httpx.AsyncClient, token: str = TOKEN, next_path: str = "/_mockglot/ui/sessions"):
    return await client.post("/_mockglot/ui/sign-in", data={"token": token, "next": next_path})


async def a_session(client: httpx.AsyncClient, api_key: str, **body) -> dict:
    response = await client.post(
        "/v1/sessions", json={"mode": "bidirectional_translation", **body}, headers=auth_header(api_key)
    )
    assert response.status_code == 201, response.text
    return response.json()


def auth_header(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_without_the_token_every_page_is_the_sign_in_form_and_no_data(ui, api_key):
    session = await a_session(ui, api_key)
    for path in (
        "/_mockglot/ui",
        "/_mockglot/ui/sessions",
        f"/_mockglot/ui/sessions/{session['id']}",
        "/_mockglot/ui/clock",
    ):
        page = await ui.get(path)
        assert page.status_code == 401
        assert 'name="token"' in page.text and 'type="password"' in page.text
        assert session["id"] not in page.text.replace(f"/_mockglot/ui/sessions/{session['id']}", "")
    expect_error(await ui.get("/_mockglot/sessions"), 401, "invalid_api_key")
    expect_error(await ui.get("/_mockglot/events"), 401, "invalid_api_key")


async def test_signing_in_sets_an_http_only_cookie_that_is_not_the_token(ui, api_key):
    wrong = await sign_in(ui, "not-the-token")
    assert wrong.status_code == 401 and "not this server&#x27;s control token" in wrong.text
    assert "set-cookie" not in wrong.headers
    signed = await sign_in(ui, next_path="/_mockglot/ui/clock")
    assert signed.status_code == 303 and signed.headers["location"] == "/_mockglot/ui/clock"
    cookie = signed.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/_mockglot" in cookie
    assert TOKEN not in cookie and TOKEN not in signed.headers["location"]
    page = await ui.get("/_mockglot/ui/sessions")
    assert page.status_code == 200 and 'data-page="sessions"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    session = await a_session(ui, api_key)
    listed = await ui.get("/_mockglot/sessions")
    assert session["id"] in {s["id"] for s in listed.json()["data"]}
    signed_out = await ui.post("/_mockglot/ui/sign-out")
    assert "Max-Age=0" in signed_out.headers["set-cookie"]
    assert (await ui.get("/_mockglot/ui/sessions")).status_code == 401


async def test_a_change_through_the_cookie_needs_the_inspector_header(ui):
    await sign_in(ui)
    refused = await ui.post("/_mockglot/clock", json={"advance": 60})
    expect_error(refused, 401, "invalid_api_key")
    allowed = await ui.post("/_mockglot/clock", json={"advance": 60}, headers={"X-Mockglot-UI": "1"})
    assert allowed.status_code == 200 and allowed.json()["offset_seconds"] == 60
    forged = httpx.Cookies({auth.COOKIE: auth.cookie_value("another-token")})
    ui.cookies = forged
    expect_error(await ui.get("/_mockglot/clock"), 401, "invalid_api_key")


async def test_sign_in_only_ever_returns_to_an_inspector_page(ui):
    for elsewhere in ("https://evil.example/", "//evil.example/_mockglot/ui", "/v1/sessions", "/_mockglot/ui/\\evil"):
        assert (await sign_in(ui, next_path=elsewhere)).headers["location"] == "/_mockglot/ui/sessions"


async def test_an_unknown_session_is_a_page_that_says_so_and_a_404_envelope(ui):
    await sign_in(ui)
    page = await ui.get("/_mockglot/ui/sessions/sess_<img src=x onerror=alert(1)>")
    assert page.status_code == 404
    assert "No session" in page.text and "&lt;img src=x onerror=alert(1)&gt;" in page.text
    assert "<img" not in page.text
    expect_error(await ui.get("/_mockglot/sessions/sess_nope"), 404, "session_not_found")
    assert (await ui.get("/_mockglot/ui/nothing-here")).status_code == 404
    assert (await ui.get("/_mockglot/ui/static/../../settings.py")).status_code == 404


async def test_a_known_session_page_carries_its_id_escaped(ui, api_key):
    await sign_in(ui)
    session = await a_session(ui, api_key, metadata={"note": "<script>alert(1)</script>"})
    page = await ui.get(f"/_mockglot/ui/sessions/{session['id']}")
    assert page.status_code == 200 and f'data-subject="{session["id"]}"' in page.text
    assert "alert(1)" not in page.text  # client data is only ever fetched as JSON and inserted as text


async def test_scenarios_can_be_viewed_by_name_only(ui):
    await sign_in(ui)
    headers = {"X-Mockglot-UI": "1"}
    upload = {"scenario": {"name": "xss", "turns": {"customer": [{"text": "<script>alert(2)</script>"}]}}}
    assert (await ui.post("/_mockglot/scenarios", json=upload, headers=headers)).status_code == 201
    viewed = (await ui.get("/_mockglot/scenarios/xss")).json()
    assert viewed["scenario"]["turns"]["customer"][0]["text"] == "<script>alert(2)</script>"
    assert viewed["source"] == "upload"
    expect_error(await ui.get("/_mockglot/scenarios/pyproject.toml"), 404, "scenario_not_found")
    assert (await ui.get("/_mockglot/ui/scenarios/xss")).status_code == 200
    assert (await ui.get("/_mockglot/ui/scenarios/nope")).status_code == 404


async def test_the_pages_need_no_sign_in_when_the_control_plane_is_open(make_app):
    app = make_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        assert (await client.get("/_mockglot/ui/sessions")).status_code == 200
        assert (await client.get("/_mockglot/ui")).headers["location"] == "/_mockglot/ui/sessions"


def test_the_static_files_ship_in_the_package():
    for name in STATIC:
        assert len(_static(name)) > 1000


async def test_a_huge_sign_in_form_is_refused_unread(ui):
    refused = await ui.post("/_mockglot/ui/sign-in", content=b"token=" + b"x" * 100_000)
    assert refused.status_code == 413
