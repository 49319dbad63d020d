"""The route table every HTTP request goes through: what matches, what is a 405, what is a 404."""

from __future__ import annotations

import pytest

from mockglot.http import Request, Response
from mockglot.router import Router


def named(name: str):
    async def handler(request: Request) -> Response:
        return Response(200, name.encode(), [])

    handler.__name__ = name
    return handler


@pytest.fixture
def router() -> Router:
    table = Router()
    table.add("POST", "/v1/sessions", named("create"))
    table.add("GET", "/v1/sessions/{session_id}", named("retrieve"))
    table.add("POST", "/v1/sessions/{session_id}/end", named("end"))
    table.add("GET", "/v1/recordings/{recording_id}/audio", named("audio"))
    return table


def test_a_fixed_path_and_a_template_resolve_with_their_parameters(router):
    assert router.resolve("POST", "/v1/sessions").handler.__name__ == "create"
    match = router.resolve("POST", "/v1/sessions/sess_1/end")
    assert (match.handler.__name__, match.params) == ("end", {"session_id": "sess_1"})
    assert router.resolve("GET", "/v1/recordings/rec_9/audio").params == {"recording_id": "rec_9"}


def test_a_get_route_answers_head(router):
    assert router.resolve("HEAD", "/v1/sessions/sess_1").handler.__name__ == "retrieve"


def test_a_known_path_with_another_method_lists_what_it_allows(router):
    match = router.resolve("DELETE", "/v1/sessions/sess_1")
    assert match.handler is None
    assert set(match.allowed) == {"GET", "HEAD"}


@pytest.mark.parametrize(
    "path",
    ["/v1/sessions/", "/v1/sessions//end", "/v1/session/sess_1", "/v1/sessions/sess_1/end/", "/v1", ""],
)
def test_near_misses_are_not_routes(router, path):
    assert router.resolve("GET", path) is None
    assert router.resolve("POST", path) is None


def test_a_route_added_twice_is_a_mistake(router):
    with pytest.raises(ValueError, match="two routes for GET"):
        router.add("GET", "/v1/sessions/{id}", named("again"))
