"""Webhook endpoints and their deliveries: register, list, delete; inspect every attempt; redeliver."""

from __future__ import annotations

import ipaddress
import socket

import msgspec

from mockglot import wire
from mockglot.control.endpoint import ControlContext, Endpoint, Reply, query_float
from mockglot.errors import ApiError
from mockglot.state.auth import KEY_PATTERN
from mockglot.state.clock import isoformat
from mockglot.webhooks.state import Delivery, WebhookEndpoint

STATUSES = ("pending", "succeeded", "failed")


def endpoint_info(endpoint: WebhookEndpoint, *, with_secret: bool = False) -> wire.WebhookEndpointInfo:
    return wire.WebhookEndpointInfo(
        id=endpoint.id,
        url=endpoint.url,
        events=None if endpoint.events is None else [e for e in wire.WEBHOOK_EVENTS if e in endpoint.events],
        organization=endpoint.organization,
        source=endpoint.source,
        created_at=isoformat(endpoint.created_at),
        secret=endpoint.secret if with_secret else msgspec.UNSET,
    )


def delivery_info(delivery: Delivery) -> wire.WebhookDelivery:
    return wire.WebhookDelivery(
        id=delivery.id,
        endpoint_id=delivery.endpoint.id,
        event_id=delivery.event_id,
        event_type=delivery.event_type,
        session_id=delivery.session_id,
        status=delivery.status,
        created_at=isoformat(delivery.created_at),
        next_attempt_at=None if delivery.next_attempt_at is None else isoformat(delivery.next_attempt_at),
        redelivery_of=delivery.redelivery_of,
        attempts=[
            wire.WebhookAttempt(
                retry_count=a.retry_count, at=isoformat(a.at), status_code=a.status_code,
                latency_ms=a.latency_ms, error=a.error,
            )
            for a in delivery.attempts
        ],
        event=msgspec.Raw(delivery.body),
    )  # fmt: skip


def _organization(ctx: ControlContext, request: wire.WebhookEndpointCreate) -> str | None:
    """The organization an endpoint is limited to: named, or the one an API key belongs to."""
    if request.api_key is None:
        return request.organization
    if request.organization is not None:
        raise ApiError("invalid_field_value", "Give `api_key` or `organization`, not both.", param="api_key")
    if not KEY_PATTERN.match(request.api_key):
        raise ApiError("invalid_field_value", "`api_key` must look like sk_test_… or sk_live_….", param="api_key")
    keys = ctx.state.keys
    key = keys.ensure(request.api_key) if keys.open_mode else keys.get(request.api_key)
    if key is None:
        raise ApiError("invalid_field_value", "`api_key` is not one of this server's keys.", param="api_key")
    return key.organization


def _is_loopback(host: str) -> bool:
    """127.x, ::1, localhost and the spellings a resolver also takes for them (127.1, 2130706433, 0x7f.1)."""
    host = host.strip("[]").rstrip(".").lower()
    if host in ("localhost", "0.0.0.0", "::") or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            address = ipaddress.ip_address(socket.inet_aton(host))  # the legacy IPv4 forms
        except OSError:
            return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or address.is_unspecified or bool(mapped and mapped.is_loopback)


def _targets_self(url: str, ctx: ControlContext) -> bool:
    """Whether `url` is this server: its port, and a loopback name or a name it is known by (the address the
    request came in on, its Host header, --host)."""
    import httpx  # here, not at import: serving starts without an HTTP client

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return False  # the registry says what is wrong with it
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    scope = ctx.request.scope
    settings = ctx.state.settings
    ours: set[tuple[str, int]] = {(settings.host, settings.port)}
    if scope.get("server"):
        ours.add((str(scope["server"][0]), int(scope["server"][1] or 0)))
    host_header = dict(scope.get("headers", ())).get(b"host", b"").decode("latin-1")
    try:
        via = httpx.URL(f"http://{host_header}/")
        if via.host:
            ours.add((via.host, via.port or 80))
    except (httpx.InvalidURL, ValueError):
        pass
    host = parsed.host.lower().rstrip(".")
    return any(
        port == our_port and (_is_loopback(host) or host == our_host.lower().strip("[]")) for our_host, our_port in ours
    )


async def register(ctx: ControlContext) -> Reply:
    request = ctx.parse(wire.WebhookEndpointCreate)
    organization = _organization(ctx, request)
    if _targets_self(request.url, ctx):
        raise ApiError(
            "invalid_field_value",
            "`url` points at this mockglot server itself: its deliveries would call mockglot's own routes, "
            "possibly in a loop. Give the URL of your webhook receiver (another port or host).",
            param="url",
        )
    endpoint = ctx.state.webhooks.register(request.url, request.events, request.secret, organization)
    return Reply(201, endpoint_info(endpoint, with_secret=True))


async def list_endpoints(ctx: ControlContext) -> Reply:
    return Reply(200, wire.ListOf(data=[endpoint_info(e) for e in ctx.state.webhooks.endpoints.values()]))


async def delete_endpoint(ctx: ControlContext) -> Reply:
    endpoint_id = ctx.path("endpoint_id")
    if ctx.state.webhooks.remove(endpoint_id) is None:  # the dispatcher stops what was in flight
        raise ApiError(
            "webhook_endpoint_not_found",
            f"No webhook endpoint {endpoint_id!r}: GET /_mockglot/webhooks lists them.",
            param="endpoint_id",
        )
    return Reply(200, wire.Deleted(id=endpoint_id))


def _choice(ctx: ControlContext, name: str, allowed: tuple[str, ...]) -> str | None:
    value = ctx.query(name)
    if value is not None and value not in allowed:
        raise ApiError("invalid_field_value", f"`{name}` must be one of: {', '.join(allowed)}.", param=name)
    return value


async def list_deliveries(ctx: ControlContext) -> Reply:
    """Oldest first; the last `limit` of those matching the filters."""
    limit = int(query_float(ctx, "limit", 100, 1, 10_000))
    found = ctx.state.webhooks.deliveries(
        endpoint_id=ctx.query("endpoint_id"),
        event_type=_choice(ctx, "event_type", wire.WEBHOOK_EVENTS),
        status=_choice(ctx, "status", STATUSES),
        session_id=ctx.query("session_id"),
    )
    return Reply(200, wire.ListOf(data=[delivery_info(d) for d in found[-limit:]]))


def _delivery(ctx: ControlContext) -> Delivery:
    delivery_id = ctx.path("delivery_id")
    delivery = ctx.state.webhooks.get(delivery_id)
    if delivery is None:
        raise ApiError(
            "delivery_not_found",
            f"No webhook delivery {delivery_id!r}: GET /_mockglot/webhooks/deliveries lists them.",
            param="delivery_id",
        )
    return delivery


async def get_delivery(ctx: ControlContext) -> Reply:
    return Reply(200, delivery_info(_delivery(ctx)))


async def redeliver(ctx: ControlContext) -> Reply:
    copy = ctx.webhooks.redeliver(_delivery(ctx).id)
    assert copy is not None  # the delivery was just found, and nothing runs in between
    return Reply(202, delivery_info(copy))


ENDPOINTS = [
    Endpoint(
        "POST", "/_mockglot/webhooks", register, "", "Register a webhook endpoint",
        status=201, request=wire.WebhookEndpointCreate, response=wire.WebhookEndpointInfo, body_required=True,
    ),
    Endpoint("GET", "/_mockglot/webhooks", list_endpoints, "", "List webhook endpoints", response=wire.ListOf),
    Endpoint(
        "GET", "/_mockglot/webhooks/deliveries", list_deliveries, "", "List webhook deliveries",
        response=wire.ListOf,
        query={"endpoint_id": str, "event_type": str, "status": str, "session_id": str, "limit": int},
    ),
    Endpoint(
        "GET", "/_mockglot/webhooks/deliveries/{delivery_id}", get_delivery, "", "Retrieve a webhook delivery",
        response=wire.WebhookDelivery,
    ),
    Endpoint(
        "POST", "/_mockglot/webhooks/deliveries/{delivery_id}/redeliver", redeliver, "",
        "Redeliver a webhook event", status=202, response=wire.WebhookDelivery,
    ),
    Endpoint(
        "DELETE", "/_mockglot/webhooks/{endpoint_id}", delete_endpoint, "", "Delete a webhook endpoint",
        response=wire.Deleted,
    ),
]  # fmt: skip
