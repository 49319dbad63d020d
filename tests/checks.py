"""Assertions shared by the API-area tests."""

from __future__ import annotations


def expect_error(response, status: int, code: str, param: str | None = None) -> dict:
    """The documented envelope with this status and code (and `param`, when given); returns `error`."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error
