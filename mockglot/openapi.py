"""OpenAPI 3.1 documents generated from the endpoint tables and the wire types, never written by hand."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import msgspec

from mockglot import __version__
from mockglot.errors import CATALOGUE
from mockglot.http import Endpoint
from mockglot.wire import ErrorEnvelope

REF = "#/components/schemas/{name}"
_ERROR_STATUSES = sorted({kind.status for kind in CATALOGUE.values() if 400 <= kind.status < 600})


def document(title: str, endpoints: Iterable[Endpoint[Any]], *, security: bool = True) -> dict[str, Any]:
    endpoints = list(endpoints)
    types: set[type] = {ErrorEnvelope}
    for endpoint in endpoints:
        types.update(t for t in (endpoint.request, endpoint.response) if t is not None)
    ordered = sorted(types, key=lambda t: t.__name__)
    schemas, components = msgspec.json.schema_components(ordered, ref_template=REF)
    by_type: dict[type, dict[str, Any]] = dict(zip(ordered, schemas, strict=True))
    error_ref = by_type[ErrorEnvelope]

    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"{(\w+)}", endpoint.path)
        ]
        parameters += [
            {"name": name, "in": "query", "required": False, "schema": {"type": "string"}} for name in endpoint.query
        ]
        if endpoint.idempotent:
            parameters.append(
                {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"}}
            )
        content: dict[str, Any] = {}
        if endpoint.response is not None:
            content["application/json"] = {"schema": by_type[endpoint.response]}
        for media_type in endpoint.media_types:
            content[media_type.split(";")[0]] = {"schema": {"type": "string"}}
        responses: dict[str, Any] = {
            str(endpoint.status): {"description": "Success", **({"content": content} if content else {})}
        }
        for status in _ERROR_STATUSES:
            responses[str(status)] = {
                "description": "Error",
                "content": {"application/json": {"schema": error_ref}},
            }
        operation: dict[str, Any] = {
            "summary": endpoint.summary,
            "operationId": re.sub(r"\W+", "_", endpoint.summary.lower()).strip("_"),
            "parameters": parameters,
            "responses": responses,
        }
        if endpoint.request is not None:
            operation["requestBody"] = {
                "required": endpoint.body_required,
                "content": {"application/json": {"schema": by_type[endpoint.request]}},
            }
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation

    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": __version__},
        "paths": paths,
        "components": {"schemas": components},
    }
    if security:
        doc["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "sk_test_… or sk_live_…"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
        doc["security"] = [{"bearer": []}, {"apiKey": []}]
    return doc
