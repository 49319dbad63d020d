"""HTTP plumbing shared by the public API and the control plane: the request a handler sees, the response it
gives, and the error envelope.

These are not Starlette's `Request` and `Response`: on the REST hot path their conveniences (lazy header
normalisation, URL objects, the send wrappers) cost more than the rest of a request, and handlers need only
what is here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from starlette.types import Receive, Scope, Send

from mockglot.errors import ApiError

MAX_BODY_BYTES = 1024 * 1024
JSON = "application/json"
RawHeaders = Sequence[tuple[bytes, bytes]]


class Request:
    """One HTTP request with its whole body already read."""

    __slots__ = ("_headers", "_query", "body", "id", "path_params", "scope")

    def __init__(self, scope: Scope, request_id: str, body: bytes) -> None:
        self.scope = scope
        self.id = request_id
        self.body = body
        self.path_params: dict[str, str] = {}
        self._headers: dict[bytes, bytes] | None = None
        self._query: dict[str, str] | None = None

    @property
    def method(self) -> str:
        return self.scope["method"]

    @property
    def path(self) -> str:
        return self.scope["path"]

    def header(self, name: bytes) -> str | None:
        """One header by its lowercase name; the last one wins when it is repeated."""
        if self._headers is None:
            self._headers = dict(self.scope["headers"])
        value = self._headers.get(name)
        return None if value is None else value.decode("latin-1")

    def query(self, name: str, default: str | None = None) -> str | None:
        if self._query is None:
            self._query = dict(parse_qsl(self.scope["query_string"].decode("latin-1"), keep_blank_values=True))
        return self._query.get(name, default)

    def origin(self, scheme: str = "http") -> str:
        """The origin the client called us on (`http` or `ws` flavoured), honouring a TLS-terminating proxy."""
        proto = (self.header(b"x-forwarded-proto") or self.scope.get("scheme", "http")).split(",")[0].strip().lower()
        secure = proto in ("https", "wss")
        host = self.header(b"x-forwarded-host") or self.header(b"host")
        if host is None:
            server_host, port = self.scope.get("server") or ("localhost", 80)
            host = f"{server_host}:{port}"
        return f"{scheme}{'s' if secure else ''}://{host.split(',')[0].strip()}"

    def json(self, *, required: bool) -> Any:
        """The body as a decoded JSON object, or None when it may be and is empty."""
        body = self.body
        if len(body) > MAX_BODY_BYTES:
            raise ApiError("invalid_request", f"The request body is larger than {MAX_BODY_BYTES} bytes.")
        if not body.strip():
            if required:
                raise ApiError(
                    "invalid_request",
                    "The request body is empty. Send a JSON object with `Content-Type: application/json`.",
                )
            return None
        content_type = self.header(b"content-type") or ""
        if content_type.split(";", 1)[0].strip().lower() != JSON:
            raise ApiError(
                "invalid_request",
                f"Unsupported Content-Type {content_type or '(none)'!r}: send the body as JSON with "
                "`Content-Type: application/json`.",
            )
        try:
            value = msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            raise ApiError("invalid_request", f"The request body is not valid JSON: {exc}.") from None
        except RecursionError:
            raise ApiError("invalid_request", "The request body is nested too deeply to be a request.") from None
        if not isinstance(value, dict):
            raise ApiError("invalid_request", f"The request body must be a JSON object, not {type(value).__name__}.")
        return value


async def read_body(receive: Receive) -> bytes:
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body"):
        return body
    chunks = [body]
    while message.get("more_body"):
        message = await receive()
        chunks.append(message.get("body", b""))
    return b"".join(chunks)


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]]

    async def send(self, send: Send, *extra: tuple[bytes, bytes]) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": [*self.headers, *extra]})
        await send({"type": "http.response.body", "body": self.body})


def response(status: int, body: bytes, media_type: str = JSON, headers: RawHeaders = ()) -> Response:
    return Response(
        status, body, [(b"content-length", str(len(body)).encode()), (b"content-type", media_type.encode()), *headers]
    )


def raw_headers(headers: Mapping[str, str]) -> RawHeaders:
    """`headers` must be latin-1 (ours are, and warnings are escaped)."""
    return [(name.lower().encode(), value.encode("latin-1")) for name, value in headers.items()]


def error_response(exc: ApiError, request_id: str | None, headers: RawHeaders = ()) -> Response:
    if exc.retry_after is not None:
        headers = [*headers, (b"retry-after", str(exc.retry_after).encode())]
    return response(exc.status, msgspec.json.encode(exc.body(request_id)), JSON, headers)
