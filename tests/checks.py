"""Assertions and requests shared by the API-area tests."""

from __future__ import annotations


def expect_error(response, status: int, code: str, param: str | None = None) -> dict:
    """The documented envelope with this status and code (and `param`, when given); returns `error`."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error


BASIC = {"mode": "bidirectional_translation", "source_language": "de", "target_language": "en"}


async def create(client, body=None, **kwargs) -> dict:
    """POST /v1/sessions (`BASIC` unless `body`), which must give 201; the created session."""
    response = await client.post("/v1/sessions", json=BASIC if body is None else body, **kwargs)
    assert response.status_code == 201, response.text
    return response.json()
