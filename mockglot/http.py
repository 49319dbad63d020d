"""HTTP plumbing shared by the public API and the control plane, on Starlette's own `Request` and `Response`:
the endpoint table row, what a handler replies, the body read under the one size limit, credentials, and the
error envelope.
"""

from __future__ import annotations

import codecs
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from mockglot.errors import ApiError
from mockglot.state.auth import Credentials
from mockglot.validation import malformed_json

MAX_BODY_BYTES = 1024 * 1024  # the one request-body limit, for the public API and the control plane alike
MAX_HEADER_BYTES = 16 * 1024  # all header names and values of one request (uvicorn's h11 limit: the same)
MAX_HEADERS = 100
JSON = "application/json"
BODY_SCOPE_KEY = "mockglot.body"  # the body as read, for the request journal
REQUEST_ID_SCOPE_KEY = "mockglot.request_id"
HEADERS_SCOPE_KEY = "mockglot.headers"
CREDENTIALS_SCOPE_KEY = "mockglot.credentials"
RawHeaders = Sequence[tuple[bytes, bytes]]
C = TypeVar("C")

__all__ = ["ClientDisconnect", "Request", "Response"]


class Reply(msgspec.Struct):
    """What a handler answers. A Struct: made in C, once a request."""

    status: int
    body: Any
    media_type: str | None = None  # None: `body` is a wire value encoded as JSON; else raw bytes
    headers: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Endpoint(Generic[C]):
    """One row of an API area's table: it builds the route, the OpenAPI entry and the fuzzing target.

    `C` is the context the handler takes (the public API's or the control plane's)."""

    method: str
    path: str
    handler: Callable[[C], Awaitable[Reply]]
    scope: str  # the key scope the public API requires; "" on the control plane
    summary: str
    status: int = 200
    request: type | None = None
    response: type | None = None
    body_required: bool = False
    idempotent: bool = False
    query: dict[str, type] = field(default_factory=dict)
    media_types: tuple[str, ...] = ()


class RawResponse(Response):
    """A Starlette response whose headers are given as raw bytes: nothing is parsed or rebuilt on the way out."""

    body: bytes

    def __init__(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.status_code = status
        self.body = body
        self.raw_headers = headers
        self.background = None


def response(status: int, body: bytes, media_type: str = JSON, headers: RawHeaders = ()) -> RawResponse:
    return RawResponse(
        status, body, [(b"content-length", b"%d" % len(body)), (b"content-type", media_type.encode()), *headers]
    )


def raw_headers(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    """`headers` must be latin-1 (ours are, and warnings are escaped)."""
    return [(name.lower().encode(), value.encode("latin-1")) for name, value in headers.items()]


def headers_of(scope: MutableMapping[str, Any]) -> dict[str, str]:
    """The request's headers by lowercase name (the last wins when one is repeated), made once per request: the
    hot path reads several, and Starlette's `Headers` scans the raw list for each."""
    headers: dict[str, str] | None = scope.get(HEADERS_SCOPE_KEY)
    if headers is None:
        headers = scope[HEADERS_SCOPE_KEY] = {}
        for name, value in scope["headers"]:  # a loop, not a comprehension: no function call of its own
            headers[name.decode("latin-1")] = value.decode("latin-1")
    return headers


def credentials_of(scope: MutableMapping[str, Any]) -> Credentials:
    """What the request presents (read once: the instrumentation and the endpoint both ask). A client sends the
    same credentials request after request: what they read as is remembered (bounded), not parsed again."""
    found: Credentials | None = scope.get(CREDENTIALS_SCOPE_KEY)
    if found is None:
        headers = headers_of(scope)
        presented = (headers.get("authorization"), headers.get("x-api-key"))
        found = _credentials.get(presented)
        if found is None:
            if len(_credentials) >= MAX_REMEMBERED_CREDENTIALS:
                _credentials.clear()
            found = _credentials[presented] = Credentials.read(headers)
        scope[CREDENTIALS_SCOPE_KEY] = found
    return found


MAX_REMEMBERED_CREDENTIALS = 1024
_credentials: dict[tuple[str | None, str | None], Credentials] = {}  # (Authorization, X-Api-Key) -> as read


def request_id(scope: Mapping[str, Any]) -> str | None:
    value = scope.get(REQUEST_ID_SCOPE_KEY)
    return value if isinstance(value, str) else None


def error_response(exc: ApiError, request_id: str | None, headers: RawHeaders = ()) -> RawResponse:
    if exc.retry_after is not None:
        headers = [*headers, (b"retry-after", str(exc.retry_after).encode())]
    return response(exc.status, msgspec.json.encode(exc.body(request_id)), JSON, headers)


def too_large() -> ApiError:
    return ApiError(
        "request_too_large",
        f"The request body is larger than {MAX_BODY_BYTES} bytes; send a smaller body (audio goes over the stream).",
    )


async def read_body(request: Request) -> bytes:
    """The whole body, refused as soon as it passes `MAX_BODY_BYTES` (announced or as it arrives).

    Raises `ClientDisconnect` when the client goes away before the body is complete: the request then does
    nothing at all."""
    length = headers_of(request.scope).get("content-length")
    if length is not None and length.isascii() and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise too_large()
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large()
        if not message.get("more_body"):
            break
        chunks.append(chunk)
    body = b"".join((*chunks, chunk)) if chunks else chunk  # most bodies come in one message
    request.scope[BODY_SCOPE_KEY] = body
    return body


def media_type(request: Request) -> str:
    return (headers_of(request.scope).get("content-type") or "").split(";", 1)[0].strip().lower()


JSON_TYPES: dict[type, str] = {  # the names a JSON user knows, not Python's (`NoneType`, `list`)
    list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean", type(None): "null",
}  # fmt: skip


def decode_json(request: Request, body: bytes, *, required: bool) -> Any:
    """The body as a decoded JSON object, or None when it may be and is empty."""
    if not body or body.isspace():
        if required:
            raise ApiError(
                "invalid_request",
                "The request body is empty. Send a JSON object with `Content-Type: application/json`.",
            )
        return None
    content_type = headers_of(request.scope).get("content-type") or ""
    if content_type != JSON and media_type(request) != JSON:  # (exactly JSON, as nearly every client sends it)
        raise ApiError(
            "invalid_request",
            f"Unsupported Content-Type {content_type or '(none)'!r}: send the body as JSON with "
            "`Content-Type: application/json`.",
        )
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        if body.startswith(codecs.BOM_UTF8) and not body.startswith(codecs.BOM_UTF8 * 2):
            # RFC 8259 §8.1 lets a parser ignore a byte order mark; editors put one before a file sent with curl
            return decode_json(request, body[len(codecs.BOM_UTF8) :], required=required)
        raise ApiError("invalid_request", f"The request body is not valid JSON: {malformed_json(body, exc)}.") from None
    except RecursionError:
        raise ApiError("invalid_request", "The request body is nested too deeply to be a request.") from None
    if not isinstance(value, dict):
        raise ApiError(
            "invalid_request",
            f"The request body must be a JSON object ({{...}}), not {JSON_TYPES.get(type(value), 'that')}.",
        )
    return value


def origin(request: Request, scheme: str = "http") -> str:
    """The origin the client called us on (`http` or `ws` flavoured), honouring a TLS-terminating proxy. A client
    sends the same headers request after request: what they make is remembered (bounded), not worked out again."""
    headers = headers_of(request.scope)
    forwarded_proto, forwarded_host = headers.get("x-forwarded-proto"), headers.get("x-forwarded-host")
    host = forwarded_host or headers.get("host")
    if not host:  # none, or empty (allowed by HTTP): the address the request came in on
        server_host, port = request.scope.get("server") or ("localhost", 80)
        host = server_host if port is None else f"{server_host}:{port}"
    seen = (scheme, forwarded_proto or request.scope.get("scheme", "http"), host)
    found = _origins.get(seen)
    if found is None:
        secure = seen[1].split(",")[0].strip().lower() in ("https", "wss")
        if len(_origins) >= MAX_REMEMBERED_ORIGINS:
            _origins.clear()
        found = _origins[seen] = f"{scheme}{'s' if secure else ''}://{host.split(',')[0].strip()}"
    return found


MAX_REMEMBERED_ORIGINS = 1024
_origins: dict[tuple[str, str, str], str] = {}  # (scheme wanted, protocol, host) as presented -> the origin
