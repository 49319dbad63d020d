"""Faults: arm REST and stream faults, list them with how often they fired, disarm them."""

from __future__ import annotations

from typing import Literal

from mockglot import wire
from mockglot.control.endpoint import ControlContext, Endpoint, Reply
from mockglot.errors import ApiError
from mockglot.faults import ArmedFault, rest_fault_problem, stream_fault_problem


def record(fault: ArmedFault) -> wire.FaultRecord[wire.RestFault | wire.StreamFault]:
    return wire.FaultRecord(id=fault.id, kind=fault.kind, rule=fault.rule, fired=fault.fired)


def _arm(ctx: ControlContext, kind: Literal["rest", "stream"]) -> Reply:
    rule: wire.RestFault | wire.StreamFault
    if kind == "rest":
        rule = rest = ctx.parse(wire.RestFault)
        problem = rest_fault_problem(rest)
    else:
        rule = stream = ctx.parse(wire.StreamFault)
        problem = stream_fault_problem(stream)
    if problem is not None:
        raise ApiError("invalid_field_value", f"This fault is rejected: {problem}.")
    fault = ctx.state.faults.add(kind, rule, ctx.state.clock.now())
    return Reply(201, record(fault))


async def arm_rest(ctx: ControlContext) -> Reply:
    return _arm(ctx, "rest")


async def arm_stream(ctx: ControlContext) -> Reply:
    return _arm(ctx, "stream")


async def list_faults(ctx: ControlContext) -> Reply:
    return Reply(200, wire.ListOf(data=[record(f) for f in ctx.state.faults.all()]))


async def disarm(ctx: ControlContext) -> Reply:
    fault_id = ctx.path("fault_id")
    if not ctx.state.faults.remove(fault_id):
        raise ApiError(
            "fault_not_found", f"No fault {fault_id!r} is armed: GET /_mockglot/faults lists them.", param="fault_id"
        )
    return Reply(200, wire.Deleted(id=fault_id))


async def disarm_all(ctx: ControlContext) -> Reply:
    ctx.state.faults.reset()
    return Reply(200, wire.Deleted())


ENDPOINTS = [
    Endpoint("GET", "/_mockglot/faults", list_faults, "", "List faults", response=wire.ListOf),
    Endpoint(
        "POST", "/_mockglot/faults/rest", arm_rest, "", "Arm a REST fault",
        status=201, request=wire.RestFault, response=wire.FaultRecord[wire.RestFault], body_required=True,
    ),
    Endpoint(
        "POST", "/_mockglot/faults/stream", arm_stream, "", "Arm a stream fault",
        status=201, request=wire.StreamFault, response=wire.FaultRecord[wire.StreamFault], body_required=True,
    ),
    Endpoint("DELETE", "/_mockglot/faults/{fault_id}", disarm, "", "Disarm a fault", response=wire.Deleted),
    Endpoint("DELETE", "/_mockglot/faults", disarm_all, "", "Disarm every fault", response=wire.Deleted),
]  # fmt: skip
