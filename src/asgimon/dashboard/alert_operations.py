"""The alert API's operations, for the router and the OpenAPI document."""

from __future__ import annotations

from asgimon.alerts.records import HISTORY_KINDS
from asgimon.alerts.rules import FIELDS
from asgimon.alerts.types import RULE_TYPES, STATISTICS

from .alert_routes import ALERTS_PATH, MAX_HISTORY, ONE_PATH
from .operation import Operation, Schema

ANY: Schema = {}
RULE_BODY: Schema = {
    "type": "object",
    "properties": {
        "projectId": {"type": "string", "minLength": 1, "maxLength": 128},
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "type": {"type": "string", "enum": sorted(RULE_TYPES)},
        "threshold": {"type": "number", "minimum": 0},
        "window": {"type": "integer", "minimum": 60, "description": "seconds"},
        "pendingFor": {"type": "integer", "minimum": 0, "description": "seconds"},
        "repeatInterval": {"type": "integer", "minimum": 60, "description": "seconds"},
        "enabled": {"type": "boolean"},
        "statistic": {"type": "string", "enum": list(STATISTICS)},
        "filters": {"type": "object", "additionalProperties": {"type": "string"}},
        "channels": {
            "type": "array",
            "maxItems": 10,
            "items": {
                "type": "object",
                "properties": {"type": {"type": "string"}},
                "required": ["type"],
            },
        },
    },
    "additionalProperties": False,
}
CHANGE_BODY: Schema = {
    **RULE_BODY,
    "properties": {k: v for k, v in RULE_BODY["properties"].items() if k in FIELDS},
}
PREVIEW_BODY: Schema = {
    **RULE_BODY,
    "properties": {
        **RULE_BODY["properties"],
        "days": {"type": "integer", "minimum": 1, "maximum": 30},
    },
}
ALERT: Schema = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "projectId": {"type": "string"},
        "name": {"type": "string"},
        "type": {"type": "string"},
        "threshold": {"type": "number"},
        "enabled": {"type": "boolean"},
        "channels": {"type": "array", "items": {"type": "object"}},
        "state": {"type": "object"},
    },
    "required": ["id", "projectId", "name", "type", "threshold", "enabled", "channels"],
}
SILENCE_BODY: Schema = {
    "type": "object",
    "properties": {
        "ruleId": {"type": "string"},
        "until": {"type": "string", "format": "date-time"},
        "reason": {"type": "string", "maxLength": 500},
    },
    "required": ["until"],
    "additionalProperties": False,
}
HISTORY_QUERY: tuple[Schema, ...] = (
    {"name": "rule", "in": "query", "schema": {"type": "string", "maxLength": 64}},
    {
        "name": "kind",
        "in": "query",
        "schema": {"type": "string", "enum": list(HISTORY_KINDS)},
        "description": "transition, delivery or inapp (several comma-separated)",
    },
    {"name": "before", "in": "query", "schema": {"type": "string", "format": "date-time"}},
    {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_HISTORY},
    },
)
OBJ: Schema = {"type": "object"}

ALERT_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        ALERTS_PATH + "/preview",
        "POST",
        "preview",
        "Replay a rule over stored history: when it would have fired (nothing is saved)",
        {200: ("The replay", OBJ)},
        (401, 403, 404, 422, 429, 503),
        request=PREVIEW_BODY,
        owner="alerts",
    ),
    Operation(
        ALERTS_PATH,
        "POST",
        "create",
        "Create an alert rule",
        {201: ("The rule created", ALERT)},
        (401, 403, 404, 409, 422, 429, 503),
        request=RULE_BODY,
        owner="alerts",
    ),
    Operation(
        ONE_PATH,
        "GET",
        "listing",
        "The alert rules of project {id}, each with its state",
        {200: ("OK", {"type": "array", "items": ALERT})},
        (401, 403, 404, 422, 429, 503),
        owner="alerts",
    ),
    Operation(
        ONE_PATH,
        "PATCH",
        "change",
        "Change alert rule {id}: enable or disable it, its threshold, channels, filters…",
        {200: ("The rule as changed", ALERT)},
        (401, 403, 404, 409, 422, 429, 503),
        request=CHANGE_BODY,
        owner="alerts",
    ),
    Operation(
        ONE_PATH,
        "DELETE",
        "remove",
        "Delete alert rule {id}",
        {204: ("Deleted", ANY)},
        (401, 403, 404, 422, 429, 503),
        owner="alerts",
    ),
    Operation(
        ONE_PATH + "/test",
        "POST",
        "test",
        "Send a test notification on each channel of alert rule {id}; each outcome",
        {200: ("The deliveries", OBJ)},
        (401, 403, 404, 422, 429, 503),
        request={"type": "object", "additionalProperties": False},
        owner="alerts",
    ),
    Operation(
        ONE_PATH + "/history",
        "GET",
        "history",
        "Project {id}'s alert transitions, deliveries and in-app notifications, newest first",
        {200: ("OK", OBJ)},
        (401, 403, 404, 422, 429, 503),
        owner="alerts",
        query=HISTORY_QUERY,
    ),
    Operation(
        ONE_PATH + "/silences",
        "GET",
        "silences",
        "Project {id}'s silences",
        {200: ("OK", OBJ)},
        (401, 403, 404, 422, 429, 503),
        owner="alerts",
    ),
    Operation(
        ONE_PATH + "/silences",
        "POST",
        "silence",
        "Silence project {id}'s alerts (or one rule's) until a time",
        {201: ("The silence", OBJ)},
        (401, 403, 404, 409, 422, 429, 503),
        request=SILENCE_BODY,
        owner="alerts",
    ),
    Operation(
        ONE_PATH + "/silences/{silence}",
        "DELETE",
        "unsilence",
        "End a silence",
        {204: ("Ended", ANY)},
        (401, 403, 404, 422, 429, 503),
        owner="alerts",
    ),
)
