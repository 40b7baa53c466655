"""The OpenAPI 3.0 document of the JSON API, served at ``{mount}/api/openapi.json``.

Built from the same endpoint table the app routes from, each endpoint carrying the schema
of its answer (``dashboard/schemas.py``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from asgimon.analytics.ranges import RANGES

from .endpoints import OPERATIONS, OVERVIEW
from .ingest import COMMON, _flag, _instant, _integer, _number, wire_kinds
from .operation import Operation
from .schemas import ERROR, INGEST_BODY, Schema, T, arr, obj, ref

if TYPE_CHECKING:
    from .endpoints import Endpoint

_CONVERTER_SCHEMAS: dict[Any, Schema] = {
    _number: {"type": "number"},
    _integer: {"type": "integer"},
    _flag: {"type": "boolean"},
    _instant: {"type": "string", "format": "date-time"},
}


def _field_schema(convert: Any, choices: frozenset[str] | None = None) -> Schema:
    schema = dict(_CONVERTER_SCHEMAS.get(convert, {"type": "string"}))
    if choices is not None:
        schema["enum"] = sorted(choices)
    return schema


def _event_schema(kind: str) -> Schema:
    wire = wire_kinds()[kind]
    props: dict[str, Schema] = {
        "kind": {"type": "string", "enum": [kind]},
        "id": {"type": "string", "format": "uuid"},
        "projectId": {"type": "string", "minLength": 1, "maxLength": 128},
        "timestamp": T,
    }
    for name, (_, convert) in wire.fields.items():
        props[name] = _field_schema(convert, wire.choices.get(name))
    for group, members in wire.groups.items():
        props[group] = obj(**{m: _field_schema(convert) for m, (_, convert) in members.items()})
        if wire.group_required.get(group):
            props[group]["required"] = list(wire.group_required[group])
    assert set(COMMON) <= set(props)
    return {
        "type": "object",
        "required": ["kind", "id", "projectId", "timestamp", *wire.required],
        "properties": props,
        "additionalProperties": False,
    }


def _error_responses(*codes: int) -> dict[str, Any]:
    text = {
        400: "The body is not JSON",
        401: "Credentials are missing or wrong",
        403: "The caller may not see or write this project",
        404: "Not found, or not answered to this client",
        409: "It changed meanwhile: read it again and retry",
        413: "The batch or body is too large",
        415: "The body is not sent as application/json",
        422: "A parameter or field is wrong; details name it",
        429: "The API's rate limit was reached (Retry-After says when to retry)",
        501: "An optional dependency is not installed; the message names it",
        503: "Storage is unavailable",
    }
    return {
        str(c): {"description": text[c], "content": {"application/json": {"schema": ref("Error")}}}
        for c in codes
    }


def _range_params() -> list[Schema]:
    return [
        {
            "name": "range",
            "in": "query",
            "schema": {"type": "string", "enum": list(RANGES), "default": "7d"},
            "description": "A range ending now; or give start and end instead",
        },
        {"name": "start", "in": "query", "schema": T, "description": "ISO 8601 with offset"},
        {"name": "end", "in": "query", "schema": T, "description": "ISO 8601 with offset"},
        {
            "name": "format",
            "in": "query",
            "schema": {"type": "string", "enum": ["json", "csv"], "default": "json"},
        },
    ]


def _extra_param(name: str, description: str) -> Schema:
    from asgimon.analytics.error_groups import SEVERITY_ORDER, STATUSES
    from asgimon.analytics.listing import MAX_LIMIT
    from asgimon.analytics.performance import SORTS
    from asgimon.events import EVENT_TYPES

    text: Schema = {"type": "string", "minLength": 1, "maxLength": 400}
    schemas: dict[str, Schema] = {
        "sort": {"type": "string", "enum": list(SORTS)},
        "kind": {"type": "string", "enum": list(EVENT_TYPES)},
        "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
        "status": {"type": "string", "enum": list(STATUSES)},
        "severity": {"type": "string", "enum": list(SEVERITY_ORDER)},
        "type": text,
        "endpoint": text,
        "deployment": text,
        "newSince": text,
        "firstSeenIn": text,
    }
    return {"name": name, "in": "query", "schema": schemas[name], "description": description}


def _get(summary: str, response: Schema, params: list[Schema], tables: tuple[str, ...]) -> Schema:
    return {
        "get": {
            "summary": summary,
            "parameters": [
                *params,
                {
                    "name": "table",
                    "in": "query",
                    "schema": {"type": "string", "enum": list(tables)},
                    "description": "With format=csv: the list to export (default "
                    + tables[0]
                    + ")",
                },
            ],
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {
                        "application/json": {"schema": response},
                        "text/csv": {"schema": {"type": "string"}},
                    },
                },
                **_error_responses(401, 403, 404, 422, 429, 503),
            },
        }
    }


def _operation(op: Operation) -> Schema:
    answers = {
        str(status): {
            "description": text,
            "content": {media: {"schema": schema} for media in op.media_types},
        }
        for status, (text, schema) in op.answers.items()
    }
    out: Schema = {"summary": op.summary, "responses": {**answers, **_error_responses(*op.errors)}}
    params = [_PATH_PARAMS[name] for name in re.findall(r"\{(\w+)\}", op.path)]
    params += [p for p in _range_params() if p["name"] in op.params]
    params += list(op.query)
    if params:
        out["parameters"] = params
    if op.request is INGEST_BODY:
        events = arr({"oneOf": [ref(f"{k.title()}Event") for k in wire_kinds()]})
        body = {**op.request, "properties": {**op.request["properties"], "events": events}}
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    elif op.request is not None:
        out["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": op.request}},
        }
    return out


_PATH_PARAMS: dict[str, Schema] = {
    "id": {
        "name": "id",
        "in": "path",
        "required": True,
        "description": "A project id for GET and the project's collections, an alert id for"
        " PATCH, DELETE and test",
        "schema": {"type": "string", "minLength": 1, "maxLength": 128},
    },
    "silence": {
        "name": "silence",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 64},
    },
    "project_id": {
        "name": "project_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 128},
    },
    "fingerprint": {
        "name": "fingerprint",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[!-9;-~]+$"},
    },
}


def openapi_document(endpoints: dict[str, Endpoint], server: str = "") -> Schema:
    project_param = {
        "name": "project_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 128},
    }
    paths: dict[str, Schema] = {}
    for e in (*endpoints.values(), OVERVIEW):
        params = [project_param] if e.per_project else []
        params += [*_range_params(), *(_extra_param(p, d) for p, d in e.params.items())]
        paths[e.path] = _get(e.summary, e.response, params, e.tables)
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    schemas: dict[str, Schema] = {"Error": ERROR}
    schemas.update({f"{k.title()}Event": _event_schema(k) for k in wire_kinds()})
    return {
        "openapi": "3.0.3",
        "info": {"title": "asgimon analytics API", "version": "1"},
        "servers": [{"url": server or "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
