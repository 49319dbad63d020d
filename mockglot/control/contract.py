"""The contract report (`GET /_mockglot/contract`) and what feeds it from REST: one call per public request,
after it was answered (`observe_rest`). The stream feeds it in `api/stream.py`; the ledgers are
`mockglot.state.contract`."""

from __future__ import annotations

import asyncio

import msgspec
from starlette.types import Scope

from mockglot import wire
from mockglot.api.endpoint import UNKNOWN_FIELDS_WARNING, WARNINGS_SCOPE_KEY, Endpoint, Reply
from mockglot.control.endpoint import ControlContext, query_float
from mockglot.http import headers_of
from mockglot.state.auth import ApiKey
from mockglot.state.contract import MAX_EXAMPLES, Ledger, bump
from mockglot.state.server import ServerState

MAX_SETTLE_SECONDS = 5.0
SETTLE_POLL_SECONDS = 0.01
UNKNOWN_ROUTE = "(unknown route)"
NOT_ALLOWED = "(method not allowed)"
STRICT_UNKNOWN = "Unknown field `"
CREATE_SESSION = "POST /v1/sessions"


def observe_rest(
    state: ServerState,
    scope: Scope,
    presented: str,
    key: ApiKey | None,
    status: int | None,
    body: bytes,
) -> None:
    """Count the request in its organization's report, and note what the contract does not allow. `key` is
    what `state.keys` holds for `presented` (the caller has looked it up already: once a request); `status` and
    `body` are the response's (`status` None: the client left before it was answered)."""
    stream_token = presented.startswith("kst_")
    if key is not None:
        organization = key.organization
    elif stream_token and (record := state.sessions.for_token(presented)) is not None:
        organization = record.owner[0]
    else:
        return
    ledger = state.contract.ledger(organization)
    code, param, message = _error_of(body) if status is not None and status >= 400 else _NO_ERROR
    operation = _operation(scope, code)
    bump(ledger.operations, operation)
    if code is not None:
        bump(ledger.error_codes, code)
    if stream_token:
        ledger.violation("stream_token_on_rest", f"{scope['method']} {scope['path']}")
    if operation == CREATE_SESSION and headers_of(scope).get("idempotency-key") is None:
        ledger.violation("missing_idempotency_key", CREATE_SESSION)
    if code == "invalid_field_value" and param == "provider":
        ledger.violation("top_level_provider", f"{operation}: `provider`")
    elif code == "invalid_field_value" and param is not None and message.startswith(STRICT_UNKNOWN):
        ledger.violation("unknown_field", f"{operation}: `{param}`")
    warnings: list[str] | None = scope.get(WARNINGS_SCOPE_KEY)  # what its warning header said, if it had one
    if warnings and status is not None:
        _warned_fields(ledger, operation, warnings)


def _operation(scope: Scope, code: str | None) -> str:
    """`METHOD /path/{param}`: the route's template, so the table stays as small as the API."""
    if code == "route_not_found":
        return UNKNOWN_ROUTE
    if code == "method_not_allowed":
        return NOT_ALLOWED
    operations: dict[str, str] | None = getattr(scope.get("route"), "operations", None)
    if operations is not None:  # an endpoint table's route names its operations
        operation = operations.get(scope["method"])
        if operation is not None:
            return operation
    path: str = scope["path"]
    for name, value in scope.get("path_params", {}).items():
        path = path.replace(f"/{value}", f"/{{{name}}}", 1)
    return f"{scope['method']} {path}"


_NO_ERROR: tuple[None, None, str] = (None, None, "")


def _error_of(body: bytes) -> tuple[str | None, str | None, str]:
    """An error response's code, param and message."""
    try:
        error = msgspec.json.decode(body)["error"]
        return str(error["code"]), error.get("param"), str(error.get("message") or "")
    except (msgspec.DecodeError, KeyError, TypeError):
        return _NO_ERROR


def _warned_fields(ledger: Ledger, operation: str, warnings: list[str]) -> None:
    """Lenient mode ignored unknown fields and said so in a warning header: each is a violation."""
    for warning in warnings:
        if warning.startswith(UNKNOWN_FIELDS_WARNING):
            listed = warning.removeprefix(UNKNOWN_FIELDS_WARNING).split(" and ")[0]
            for field in listed.split(", "):
                ledger.violation("unknown_field", f"{operation}: `{field}`")


async def get_report(ctx: ControlContext) -> Reply:
    """One organization's report (`api_key` or `organization`), or every organization's merged. `settle=S`
    first waits up to S seconds for the organization's open streams to close, so a client that just closed its
    socket is counted."""
    organization = ctx.query("organization")
    api_key = ctx.query("api_key")
    if api_key is not None:
        key = ctx.state.keys.get(api_key)
        organization = key.organization if key is not None else f"(unknown key {api_key[:8]}…)"
    settle = query_float(ctx, "settle", 0.0, 0.0, MAX_SETTLE_SECONDS)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settle
    while loop.time() < deadline and any(
        organization is None or c.record.owner[0] == organization for c in ctx.state.streams.connections.values()
    ):
        await ctx.state.coordinator.outside(asyncio.sleep(SETTLE_POLL_SECONDS))
    report = ctx.state.contract.report(organization)
    if ctx.state.shared:  # each worker observes what it served: the report is all of theirs
        coordinator = ctx.state.coordinator
        for body in await coordinator.outside(coordinator.from_others(ctx.request.scope)):
            report = merged(report, msgspec.json.decode(body, type=wire.ContractReport))
    return Reply(200, report)


def merged(one: wire.ContractReport, other: wire.ContractReport) -> wire.ContractReport:
    """Two workers' reports of the same organization as one: counts added, examples kept up to three."""
    violations = {violation.kind: violation for violation in one.violations}
    for violation in other.violations:
        mine = violations.get(violation.kind)
        if mine is None:
            violations[violation.kind] = violation
        else:
            examples = [*mine.examples, *(e for e in violation.examples if e not in mine.examples)][:MAX_EXAMPLES]
            violations[violation.kind] = wire.ContractViolation(
                kind=mine.kind, count=mine.count + violation.count, why=mine.why, examples=examples
            )
    coverage = wire.ContractCoverage(
        **{
            name: _added(getattr(one.coverage, name), getattr(other.coverage, name))
            for name in ("operations", "frames_in", "frames_out", "error_codes", "close_codes")
        }
    )
    return wire.ContractReport(organization=one.organization, violations=list(violations.values()), coverage=coverage)


def _added(one: dict[str, int], other: dict[str, int]) -> dict[str, int]:
    total = dict(one)
    for name, count in other.items():
        total[name] = total.get(name, 0) + count
    return dict(sorted(total.items()))


ENDPOINTS = [
    Endpoint(
        "GET", "/_mockglot/contract", get_report, "", "The contract report: violations and coverage",
        response=wire.ContractReport, query={"api_key": str, "organization": str, "settle": float},
    ),
]  # fmt: skip
