"""`/_mockglot/ui`: the inspector's pages. Each page is one HTML shell; `static/inspector.js` fills it from the
control plane's JSON routes and the event stream, and only ever inserts what a client sent as text.

Pages, the sign-in form and the unknown-session page are rendered here; every value is HTML-escaped.
"""

from __future__ import annotations

import hmac
import html
import re
from importlib import resources
from urllib.parse import parse_qsl

from starlette.types import Receive, Scope, Send

from mockglot.http import Request, Response, response
from mockglot.inspector import auth
from mockglot.state.server import ServerState

PREFIX = "/_mockglot/ui"
HTML = "text/html; charset=utf-8"
PAGES = ("sessions", "requests", "webhooks", "faults", "scenarios", "clock")
STATIC = {  # the files the package ships, by name: nothing else on disk is ever served
    "inspector.js": "text/javascript; charset=utf-8",
    "inspector.css": "text/css; charset=utf-8",
}
MAX_FORM_BYTES = 4096
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"media-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]
SESSION_PAGE = re.compile(r"^sessions/([^/]+)$")
SCENARIO_PAGE = re.compile(r"^scenarios/([^/]+)$")


async def read_form(receive: Receive) -> bytes | None:
    """The request body, or None past MAX_FORM_BYTES (the rest is never read into memory)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _static(name: str) -> bytes:
    return resources.files("mockglot.inspector").joinpath("static", name).read_bytes()


def page(title: str, body: str, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None) -> Response:
    document = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} · mockglot inspector</title>
<link rel="stylesheet" href="{PREFIX}/static/inspector.css"></head>
<body>{body}</body></html>
"""
    return response(status, document.encode(), HTML, [*SECURITY_HEADERS, *(headers or [])])


def nav(current: str) -> str:
    links = "".join(
        f'<a href="{PREFIX}/{name}"{" class=current" if name == current else ""}>{name.capitalize()}</a>'
        for name in PAGES
    )
    return (
        f'<header><a class="brand" href="{PREFIX}/sessions">mockglot inspector</a><nav>{links}</nav>'
        f'<form method="post" action="{PREFIX}/sign-out"><button>Sign out</button></form></header>'
    )


def shell(name: str, subject: str | None = None) -> Response:
    """The page `name` (of `subject`, e.g. a session ID), drawn by the script."""
    subject_attr = "" if subject is None else f' data-subject="{html.escape(subject, quote=True)}"'
    body = (
        f'{nav(name)}<main id="app" data-page="{name}"{subject_attr}><p class="muted">Loading…</p></main>'
        f'<script src="{PREFIX}/static/inspector.js"></script>'
    )
    return page(name.capitalize() if subject is None else subject, body)


def sign_in_page(next_path: str, problem: str | None = None, status: int = 401) -> Response:
    note = f'<p class="problem">{html.escape(problem)}</p>' if problem else ""
    body = f"""<main class="sign-in"><h1>mockglot inspector</h1>
<p>This server's control plane is protected. Sign in with its control token (<code>--control-token</code>).</p>
{note}<form method="post" action="{PREFIX}/sign-in">
<input type="hidden" name="next" value="{html.escape(next_path, quote=True)}">
<label>Control token <input type="password" name="token" autocomplete="current-password" autofocus required></label>
<button type="submit">Sign in</button></form></main>"""
    return page("Sign in", body, status)


def not_found(what: str) -> Response:
    body = f'{nav("")}<main><h1>Not found</h1><p class="problem">{html.escape(what)}</p></main>'
    return page("Not found", body, 404)


def redirect(location: str, *headers: tuple[bytes, bytes]) -> Response:
    return response(303, b"", HTML, [(b"location", location.encode()), *headers])


def safe_next(value: str | None) -> str:
    """Where to go after signing in: only ever a page of the inspector."""
    if value and value.startswith(PREFIX + "/") and "//" not in value and "\\" not in value:
        return value
    return f"{PREFIX}/sessions"


class Inspector:
    """The ASGI app of every path under `/_mockglot/ui`."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_form(receive)
        if body is None:
            await page("Too large", "<main><p>The form is too large.</p></main>", 413)(scope, receive, send)
            return
        await self.serve(Request(scope, receive), body)(scope, receive, send)

    def serve(self, request: Request, body: bytes) -> Response:
        path = request.scope["path"][len(PREFIX) :].strip("/")
        method = "GET" if request.method == "HEAD" else request.method
        token = self.state.settings.control_token
        if path.startswith("static/") and method == "GET":
            name = path.removeprefix("static/")
            if name not in STATIC:
                return not_found(f"No file {name!r}.")
            return response(200, _static(name), STATIC[name], [(b"cache-control", b"no-cache")])
        if path == "sign-in" and method == "POST":
            return self.sign_in(body, token)
        if path == "sign-out" and method == "POST":
            return redirect(f"{PREFIX}/sessions", auth.set_cookie_header(None))
        if method != "GET":
            return page("Not allowed", "<main><p>Use GET.</p></main>", 405, [(b"allow", b"GET, HEAD")])
        if token is not None and not auth.signed_in(request, token):
            return sign_in_page(safe_next(request.scope["path"]))
        if path == "":
            return redirect(f"{PREFIX}/sessions")
        if path in PAGES:
            return shell(path)
        if match := SESSION_PAGE.match(path):
            session_id = match.group(1)
            if self.state.sessions.find(session_id) is None:
                return not_found(f"No session {session_id!r} on this server (it may have been reset).")
            return shell("session", session_id)
        if match := SCENARIO_PAGE.match(path):
            name = match.group(1)
            if name not in self.state.scenarios.names():
                return not_found(f"No scenario {name!r} on this server.")
            return shell("scenario", name)
        return not_found(f"No inspector page {request.scope['path']!r}.")

    def sign_in(self, body: bytes, token: str | None) -> Response:
        form = dict(parse_qsl(body.decode("utf-8", "replace")))
        next_path = safe_next(form.get("next"))
        if token is None:
            return redirect(next_path)
        presented = form.get("token", "")
        if not hmac.compare_digest(presented.encode(), token.encode()):
            return sign_in_page(next_path, "That is not this server's control token.")
        return redirect(next_path, auth.set_cookie_header(token))
