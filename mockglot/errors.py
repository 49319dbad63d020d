"""The error catalogue and the one exception type that renders it, over REST and on the stream."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ErrorKind:
    status: int
    type: str


CATALOGUE: dict[str, ErrorKind] = {
    # REST (kallglot-api.md §3)
    "invalid_request": ErrorKind(400, "invalid_request_error"),
    "idempotency_mismatch": ErrorKind(400, "invalid_request_error"),
    "invalid_api_key": ErrorKind(401, "authentication_error"),
    "revoked_api_key": ErrorKind(401, "authentication_error"),
    "insufficient_api_credits": ErrorKind(402, "permission_error"),
    "organization_inactive": ErrorKind(403, "permission_error"),
    "insufficient_permissions": ErrorKind(403, "permission_error"),
    "session_not_found": ErrorKind(404, "not_found_error"),
    "recording_not_found": ErrorKind(404, "not_found_error"),
    "analysis_not_found": ErrorKind(404, "not_found_error"),
    "agent_not_found": ErrorKind(404, "not_found_error"),
    "route_not_found": ErrorKind(404, "not_found_error"),
    # [emulator] control plane: the resource its path names does not exist (a missing session is session_not_found)
    "fault_not_found": ErrorKind(404, "not_found_error"),
    "scenario_not_found": ErrorKind(404, "not_found_error"),
    "webhook_endpoint_not_found": ErrorKind(404, "not_found_error"),
    "delivery_not_found": ErrorKind(404, "not_found_error"),
    "method_not_allowed": ErrorKind(405, "invalid_request_error"),
    "cross_origin_request": ErrorKind(403, "permission_error"),  # [emulator] control plane: a browser's write
    "request_too_large": ErrorKind(413, "invalid_request_error"),  # [emulator] body over the limit
    "headers_too_large": ErrorKind(431, "invalid_request_error"),  # [emulator] headers over the limit
    "idempotency_conflict": ErrorKind(409, "conflict_error"),
    "session_ended": ErrorKind(409, "conflict_error"),
    "session_not_connected": ErrorKind(409, "conflict_error"),  # [emulator] control plane: inject
    "transcript_empty": ErrorKind(409, "conflict_error"),  # [emulator] an analysis of a session with no turns
    "missing_required_field": ErrorKind(422, "validation_error"),
    "invalid_field_value": ErrorKind(422, "validation_error"),
    "invalid_mode": ErrorKind(422, "validation_error"),
    "invalid_language_code": ErrorKind(422, "validation_error"),
    "invalid_routing": ErrorKind(422, "validation_error"),
    "ai_agent_not_found": ErrorKind(422, "validation_error"),
    "rate_limit_exceeded": ErrorKind(429, "rate_limit_error"),
    "internal_error": ErrorKind(500, "api_error"),
    "service_unavailable": ErrorKind(503, "api_error"),
    # Stream (kallglot-api.md §7); the status is the WebSocket close code where the error closes the stream
    "invalid_token": ErrorKind(4001, "authentication_error"),
    "expired_token": ErrorKind(4001, "authentication_error"),
    "session_already_connected": ErrorKind(4009, "conflict_error"),
    "rate_limited": ErrorKind(1008, "rate_limit_error"),
    "invalid_message": ErrorKind(0, "invalid_request_error"),
    "invalid_audio_format": ErrorKind(0, "invalid_request_error"),
    "invalid_speaker": ErrorKind(0, "invalid_request_error"),
    "duplicate_sequence": ErrorKind(0, "invalid_request_error"),
    "model_unavailable": ErrorKind(0, "api_error"),
    "replay_mismatch": ErrorKind(0, "invalid_request_error"),  # [emulator] a strict replay heard other audio
}

STREAM_CLOSE_CODES: dict[str, int] = {
    "invalid_token": 4001,
    "expired_token": 4001,
    "session_not_found": 4004,
    "session_ended": 4009,
    "session_already_connected": 4009,
    "rate_limited": 1008,
    "internal_error": 1011,
}


class ApiError(Exception):
    """Every error mockglot reports: its status and type follow from `code` through the catalogue."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        param: str | None = None,
        retry_after: int | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        kind = CATALOGUE[code]
        self.code = code
        self.message = message
        self.param = param
        self.retry_after = retry_after
        self.status = status if status is not None else kind.status
        self.type = kind.type

    def body(self, request_id: str | None) -> dict[str, object]:
        error: dict[str, object] = {
            "type": self.type,
            "code": self.code,
            "message": self.message,
            "param": self.param,
            "request_id": request_id,
        }
        if self.retry_after is not None:
            error["retry_after"] = self.retry_after
        return {"error": error}

    def frame_error(self) -> dict[str, object]:
        """The `error` object of a `session.error` frame."""
        return {"type": self.type, "code": self.code, "message": self.message, "param": self.param}

    def __repr__(self) -> str:
        return f"ApiError({self.code!r}, {self.message!r}, param={self.param!r})"
