"""Scenarios: list, upload, and choose one for the next session of a key."""

from __future__ import annotations

import msgspec
import yaml

from mockglot import scenarios, wire
from mockglot.api.endpoint import Endpoint, Reply
from mockglot.control.endpoint import ControlContext
from mockglot.errors import ApiError


def info(loaded: scenarios.LoadedScenario) -> wire.ScenarioInfo:
    scenario = loaded.scenario
    return wire.ScenarioInfo(
        name=scenario.name,
        description=scenario.description,
        source=loaded.source,
        source_language=scenario.source_language,
        target_language=scenario.target_language,
        turns={speaker: len(turns) for speaker, turns in scenario.turns.items()},
    )


async def list_scenarios(ctx: ControlContext) -> Reply:
    return Reply(200, wire.ListOf(data=[info(s) for s in ctx.state.scenarios.all()]))


async def upload(ctx: ControlContext) -> Reply:
    request = ctx.parse(wire.ScenarioUpload)
    if (request.scenario is None) == (request.yaml is None):
        raise ApiError("invalid_field_value", "Give exactly one of `scenario` (a JSON object) or `yaml` (text).")
    document = request.scenario
    if request.yaml is not None:
        try:
            document = yaml.safe_load(request.yaml)
        except yaml.YAMLError as exc:
            raise ApiError("invalid_field_value", f"The scenario YAML does not parse: {exc}", param="yaml") from None
    try:
        loaded = scenarios.parse(document, "upload")
    except ValueError as exc:
        raise ApiError("invalid_field_value", str(exc), param="scenario") from None
    if any(turn.audio for turns in loaded.scenario.turns.values() for turn in turns):
        raise ApiError(
            "invalid_field_value",
            "Uploaded scenarios cannot name audio files: put the scenario and its audio in a --fixtures folder.",
            param="scenario",
        )
    ctx.state.scenarios.upload(loaded)
    return Reply(201, info(loaded))


async def view(ctx: ControlContext) -> Reply:
    name = ctx.path("name")
    if name not in ctx.state.scenarios.names():  # a name, never a path: get() would also load a file
        raise ApiError("route_not_found", f"No scenario {name!r}.", param="name")
    loaded = ctx.state.scenarios.get(name)
    return Reply(200, wire.ScenarioView(source=loaded.source, scenario=msgspec.to_builtins(loaded.scenario)))


async def use_next(ctx: ControlContext) -> Reply:
    request = ctx.parse(wire.NextScenario)
    try:
        ctx.state.scenarios.use_next(request.api_key, request.scenario, request.sessions)
    except (KeyError, ValueError):
        raise ApiError(
            "invalid_field_value",
            f"Unknown scenario {request.scenario!r}. Known: {', '.join(ctx.state.scenarios.names())}.",
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
