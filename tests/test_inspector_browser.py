"""The inspector in a real headless Chromium (Debian's `chromium`, driven by Playwright) against a real server.

Screenshots are kept under `tests/artifacts/` (ignored by git; `MOCKGLOT_ARTIFACTS` moves them).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mockglot.settings import Settings
from mockglot.testing.client import Client, silence, tone, utterance
from mockglot.testing.server import ServerThread
from tests.chromium import ARGS

CHROMIUM = os.environ.get("MOCKGLOT_CHROMIUM", "/usr/bin/chromium")
TOKEN = "browser-test-control-token"
ARTIFACTS = Path(os.environ.get("MOCKGLOT_ARTIFACTS", Path(__file__).parent / "artifacts"))

playwright_api = pytest.importorskip("playwright.async_api", reason="the playwright package is not installed")
if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
    pytest.skip(
        f"no Chromium at {CHROMIUM} (apt-get install chromium, or set MOCKGLOT_CHROMIUM)", allow_module_level=True
    )


async def until(locator, predicate: str, timeout: float = 15.0) -> None:
    """Poll `predicate` on the element until it holds.

    Not `page.wait_for_function`: its polling evaluates a string with `eval`, which the inspector's
    Content-Security-Policy (`script-src 'self'`) forbids, so it fails whenever the first check is false.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while not await locator.evaluate(predicate):
        assert asyncio.get_running_loop().time() < deadline, f"{predicate} still false after {timeout} s"
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def server():
    with ServerThread(Settings(port=0, control_token=TOKEN)) as running:  # real-time pace: frames arrive live
        yield running


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    async with playwright_api.async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        await launched.close()


@pytest.fixture
async def page(browser, server):
    """A signed-in page; JavaScript errors fail the test."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"{server.base_url}/_mockglot/ui/sessions")
    await page.fill("input[name=token]", TOKEN)
    await page.click("button[type=submit]")
    await page.wait_for_selector("table.sessions")
    yield page
    await context.close()
    assert not errors, errors


async def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 5000
    return path


async def mark_no_reload(page) -> None:
    await page.evaluate("window.__notReloaded = true")


async def assert_not_reloaded(page) -> None:
    assert await page.evaluate("window.__notReloaded === true")


def key(name: str) -> str:
    return f"sk_test_browser{name:0>16}"


async def test_a_new_session_appears_without_a_reload(page, server):
    await mark_no_reload(page)
    async with Client(server.base_url, key("appears")) as client:
        session = await client.create_session(source_language="de", target_language="en")
    row = page.locator(f'tr[data-session="{session["id"]}"]')
    await row.wait_for()
    assert "sk_test_…" in await row.inner_text() and key("appears") not in await page.content()
    assert "de → en" in await row.inner_text()
    await assert_not_reloaded(page)
    first_row = page.locator("table.sessions tbody tr").first
    assert await first_row.get_attribute("data-session") == session["id"]  # newest first
    await screenshot(page, "sessions")


async def test_frames_arrive_live_on_the_session_page(page, server):
    async with Client(server.base_url, key("live")) as client:
        session = await client.create_session()
        await page.goto(f"{server.base_url}/_mockglot/ui/sessions/{session['id']}")
        await page.wait_for_selector("#status")
        await mark_no_reload(page)
        stream = await client.open_stream(session)
        await stream.until("session.ready")
        await page.locator("details.frame .type", has_text="session.ready").wait_for()
        await page.locator("#connected", has_text="connected").wait_for()
        await stream.send_json({"type": "ping"})
        await page.locator("details.frame .type", has_text="pong").wait_for()
        await stream.send_audio("customer", utterance(), realtime=False)
        await page.locator("details.frame .type", has_text="transcript.final").wait_for()
        await page.locator(".lane.in .mark").first.wait_for()
        await page.locator(".lane.out .mark").first.wait_for()
        final = page.locator("details.frame", has=page.locator(".type", has_text="transcript.final")).first
        await final.locator("summary").click()
        await playwright_api.expect(final.locator("pre")).to_contain_text('"type": "transcript.final"')
        await stream.end()
    await page.locator("#status", has_text="ended").wait_for()
    await assert_not_reloaded(page)
    await screenshot(page, "session-live")


async def test_the_received_audio_plays_and_lasts_as_long_as_what_was_sent(page, server):
    sent = tone(1500) + silence(500)  # 2.0 s of 8 kHz mu-law
    async with Client(server.base_url, key("audio")) as client:
        session = await client.create_session()
        stream = await client.open_stream(session)
        await stream.until("session.ready")
        await stream.send_audio("customer", sent)
        await stream.end()
    await page.goto(f"{server.base_url}/_mockglot/ui/sessions/{session['id']}")
    audio = page.locator('.player[data-speaker="customer"] audio')
    await audio.wait_for()
    await until(audio, "a => a.readyState >= 1")
    duration = await audio.evaluate("a => a.duration")
    assert abs(duration - len(sent) / 8000) < 0.05
    await audio.evaluate("a => { a.muted = true; return a.play(); }")
    await until(audio, "a => a.currentTime > 0")
    drawn = await page.locator('.player[data-speaker="customer"] canvas').evaluate(
        "c => c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some((v, i) => i % 4 === 3 && v > 0)"
    )
    assert drawn  # the waveform is painted
    await screenshot(page, "session-audio")


async def test_the_clock_advances_from_the_page(page, server):
    await page.goto(f"{server.base_url}/_mockglot/ui/clock")
    await page.locator("#clock-offset", has_text="0 s").wait_for()
    try:
        await page.fill("#advance-seconds", "3600")
        await page.click("#advance")
        await page.locator("#clock-offset", has_text="3600").wait_for()
        assert 3599 <= server.call(lambda: server.state.clock.offset) <= 3601
        await screenshot(page, "clock")
        await page.click("#clock-reset")
        await page.locator("#clock-offset", has_text="0 s").wait_for()
    finally:
        server.call(server.state.clock.reset)


async def test_what_a_client_sent_is_shown_as_text_never_run(page, server):
    evil = "<script>window.__pwned = 1</script><img src=x onerror='window.__pwned = 2'>"
    uploaded = {"scenario": {"name": "evil-text", "description": evil, "turns": {"customer": [{"text": evil}]}}}
    import httpx

    async with httpx.AsyncClient(base_url=server.base_url, headers={"Authorization": f"Bearer {TOKEN}"}) as control:
        assert (await control.post("/_mockglot/scenarios", json=uploaded)).status_code == 201
    async with Client(server.base_url, key("evil")) as client:
        session = await client.create_session(metadata={"note": evil})
    await page.goto(f"{server.base_url}/_mockglot/ui/sessions/{session['id']}")
    await page.locator(".metadata td", has_text="<script>").wait_for()
    assert evil in await page.locator(".metadata").inner_text()
    await page.goto(f"{server.base_url}/_mockglot/ui/scenarios/evil-text")
    await page.locator("td", has_text="<script>").wait_for()
    assert await page.evaluate("window.__pwned") is None
    assert await page.locator("#app script, #app img").count() == 0
    await screenshot(page, "escaped")


async def test_without_the_token_the_browser_sees_the_sign_in_page_only(browser, server):
    async with Client(server.base_url, key("private")) as client:
        session = await client.create_session()
    context = await browser.new_context()
    anonymous = await context.new_page()
    await anonymous.goto(f"{server.base_url}/_mockglot/ui/sessions/{session['id']}")
    assert await anonymous.locator("input[name=token]").count() == 1
    assert await anonymous.locator("#app").count() == 0
    await anonymous.fill("input[name=token]", TOKEN)
    await anonymous.click("button[type=submit]")
    await anonymous.wait_for_selector("#status")  # back on the page it asked for
    assert anonymous.url.endswith(f"/_mockglot/ui/sessions/{session['id']}")
    await context.close()


async def test_faults_are_disarmed_and_deliveries_redelivered_from_their_pages(page, server):
    import httpx

    own = key("pages")
    async with httpx.AsyncClient(base_url=server.base_url, headers={"Authorization": f"Bearer {TOKEN}"}) as control:
        fault = (await control.post("/_mockglot/faults/rest", json={"api_key": own, "status": 503})).json()
        endpoint = (
            await control.post("/_mockglot/webhooks", json={"url": "http://127.0.0.1:9/", "api_key": own})
        ).json()
        try:
            await page.goto(f"{server.base_url}/_mockglot/ui/faults")
            row = page.locator("tr", has_text=fault["id"])
            await row.locator("button", has_text="Disarm").click()
            await row.wait_for(state="detached")
            assert fault["id"] not in {f["id"] for f in (await control.get("/_mockglot/faults")).json()["data"]}

            async with Client(server.base_url, own) as client:
                session = await client.create_session()
            deliveries = f"/_mockglot/webhooks/deliveries?session_id={session['id']}"
            await page.goto(f"{server.base_url}/_mockglot/ui/webhooks")
            row = page.locator("tr", has_text=session["id"]).first
            await row.locator("button", has_text="Redeliver").click()
            await page.locator("tr", has_text=session["id"]).nth(1).wait_for()
            copies = [d for d in (await control.get(deliveries)).json()["data"] if d["redelivery_of"]]
            assert len(copies) == 1
            await screenshot(page, "webhooks")
        finally:
            await control.delete(f"/_mockglot/webhooks/{endpoint['id']}")
            await control.delete("/_mockglot/faults/" + fault["id"])
