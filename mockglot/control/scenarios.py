"""Scenarios: list, upload, and choose one for the next session of a key."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec

from mockglot import scenarios, wire
from mockglot.control.endpoint import ControlContext, Endpoint, Reply
from mockglot.errors import ApiError
from mockglot.state.auth import KEY_PATTERN


def info(loaded: scenarios.LoadedScenario, organization: str | None = None) -> wire.ScenarioInfo:
    scenario = loaded.scenario
    return wire.ScenarioInfo(
        name=scenario.name,
        description=scenario.description,
        source=loaded.source,
        source_language=scenario.source_language,
        target_language=scenario.target_language,
        turns={speaker: len(turns) for speaker, turns in scenario.turns.items()},
        organization=organization,
    )


async def list_scenarios(ctx: ControlContext) -> Reply:
    return Reply(200, wire.ListOf(data=[info(loaded, owner) for owner, loaded in ctx.state.scenarios.all()]))


def _key_organization(ctx: ControlContext, api_key: str) -> str | None:
    """The key's organization (open mode: what it will be on the key's first request); None if unknown."""
    key = ctx.state.keys.get(api_key)
    if key is None and ctx.state.keys.open_mode and KEY_PATTERN.match(api_key):
        key = ctx.state.keys.ensure(api_key)
    return key.organization if key is not None else None


def _parse_upload(request: wire.ScenarioUpload, roots: list[Path]) -> scenarios.LoadedScenario:
    """Parse and load in a worker thread: a large document or its audio never holds up other clients.

    An upload names no paths of its own: a turn's `audio: FILE` is a file in one of the fixtures folders,
    relative to that folder."""
    document = request.scenario if request.yaml is None else scenarios.load_yaml(request.yaml, "upload")
    missing: ValueError | None = None
    for root in reversed(roots):  # the operator's folders first, the built-in one last
        try:
            return scenarios.parse(document, "upload", root, root)
        except ValueError as exc:
            if "no audio file" not in str(exc):
                raise
            missing = exc
    assert missing is not None
    raise missing


async def upload(ctx: ControlContext) -> Reply:
    request = ctx.parse(wire.ScenarioUpload)
    if (request.scenario is None) == (request.yaml is None):
        raise ApiError("invalid_field_value", "Give exactly one of `scenario` (a JSON object) or `yaml` (text).")
    organization = request.organization
    if request.api_key is not None:
        if organization is not None:
            raise ApiError("invalid_field_value", "Give `api_key` or `organization`, not both.", param="api_key")
        organization = _key_organization(ctx, request.api_key)
        if organization is None:
            raise ApiError("invalid_field_value", "Unknown api_key: this server has no such key.", param="api_key")
    try:
        loaded = await asyncio.to_thread(_parse_upload, request, ctx.state.scenarios.roots)
        ctx.state.scenarios.upload(loaded, organization)
    except ValueError as exc:
        param = "yaml" if request.yaml is not None and "does not parse" in str(exc) else "scenario"
        raise ApiError("invalid_field_value", str(exc), param=param) from None
    return Reply(201, info(loaded, organization))


async def view(ctx: ControlContext) -> Reply:
    name = ctx.path("name")
    found = [loaded for _, loaded in ctx.state.scenarios.all() if loaded.name == name]  # shared ones list first
    if not found:
        raise ApiError(
            "scenario_not_found", f"No scenario {name!r}: GET /_mockglot/scenarios lists them.", param="name"
        )
    loaded = found[0]
    return Reply(200, wire.ScenarioView(source=loaded.source, scenario=msgspec.to_builtins(loaded.scenario)))


async def use_next(ctx: ControlContext) -> Reply:
    request = ctx.parse(wire.NextScenario)
    organization = _key_organization(ctx, request.api_key)
    try:
        ctx.state.scenarios.use_next(request.api_key, request.scenario, request.sessions, organization)
    except KeyError:
        raise ApiError(
            "invalid_field_value",
            f"Unknown scenario {request.scenario!r}. Known: {', '.join(ctx.state.scenarios.names(organization))}.",
            param="scenario",
        ) from None
    return Reply(200, request)


ENDPOINTS = [
    Endpoint("GET", "/_mockglot/scenarios", list_scenarios, "", "List scenarios", response=wire.ListOf),
    Endpoint(
        "POST", "/_mockglot/scenarios", upload, "", "Upload a scenario",
        status=201, request=wire.ScenarioUpload, response=wire.ScenarioInfo, body_required=True,
    ),
    Endpoint(
        "GET", "/_mockglot/scenarios/{name}", view, "", "View a scenario", response=wire.ScenarioView
    ),
    Endpoint(
        "POST", "/_mockglot/scenarios/next", use_next, "", "Choose the scenario of a key's next session",
        request=wire.NextScenario, response=wire.NextScenario, body_required=True,
    ),
]  # fmt: skip
