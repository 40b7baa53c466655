"""``POST {mount}/api/events``: domain events pushed over HTTP, validated strictly.

The body is ``{"events": [...]}``; each event has ``kind``, ``id`` (a UUID), ``projectId``,
``timestamp`` (ISO 8601 with an offset) and its kind's fields in camelCase. A batch with any
bad event is refused whole, with every bad field named by its JSON path
(``events[3].durationMs``), and nothing of it is stored. A batch that is accepted is
written through to storage before the answer, so a 2xx means stored and a retry is safe:
events already stored are reported as duplicates.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from asgimon._validate import iso_instant
from asgimon.errors import InvalidEventError
from asgimon.events import BuildEvent, DeploymentEvent, DomainEvent, Event, FunctionInvocation

# Only the canonical form: uuid.UUID also takes braces, "urn:uuid:", whitespace and no dashes.
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

# camelCase JSON name -> (dataclass field, converter). Converters raise ValueError with a
# message for the client.
Convert = Callable[[Any], Any]


def _text(value: Any) -> Any:
    return value  # checked by the event's own validation, which names the field


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number")
    return value


def _integer(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be an integer")
    return value


def _flag(value: Any) -> Any:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _instant(value: Any) -> float:
    parsed = iso_instant(value) if isinstance(value, str) else None
    if parsed is None:
        raise ValueError("must be an ISO 8601 timestamp with a UTC offset")
    if parsed.tzinfo is None:
        raise ValueError("must carry a UTC offset (e.g. 2026-11-27T10:00:00+00:00)")
    return parsed.timestamp()


COMMON: dict[str, tuple[str, Convert]] = {
    "kind": ("kind", _text),
    "id": ("id", _text),
    "projectId": ("project_id", _text),
    "timestamp": ("timestamp", _instant),
}
KINDS: dict[str, tuple[type[Event], dict[str, tuple[str, Convert]]]] = {
    "deployment": (
        DeploymentEvent,
        {
            "deploymentId": ("deployment_id", _text),
            "type": ("type", _text),
            "status": ("status", _text),
            "durationMs": ("duration_ms", _number),
            "framework": ("framework", _text),
        },
    ),
    "build": (
        BuildEvent,
        {
            "deploymentId": ("deployment_id", _text),
            "phase": ("phase", _text),
            "startTime": ("start_time", _instant),
            "endTime": ("end_time", _instant),
            "status": ("status", _text),
            "framework": ("framework", _text),
            "assetCount": ("asset_count", _integer),
            "totalSizeBytes": ("total_size_bytes", _integer),
        },
    ),
    "function": (
        FunctionInvocation,
        {
            "functionId": ("function_id", _text),
            "deploymentId": ("deployment_id", _text),
            "status": ("status", _text),
            "durationMs": ("duration_ms", _number),
            "coldStart": ("cold_start", _flag),
            "memoryMb": ("memory_mb", _number),
            "error": ("error", _text),  # {"type", "message"}: unpacked below
        },
    ),
    "domain": (
        DomainEvent,
        {
            "domain": ("domain", _text),
            "type": ("type", _text),
            "expiresAt": ("expires_at", _instant),
        },
    ),
}
REQUIRED = {
    "deployment": ("deploymentId", "type"),
    "build": ("deploymentId", "phase", "startTime", "endTime", "status"),
    "function": ("functionId", "status", "durationMs"),
    "domain": ("domain", "type"),
}
SNAKE_TO_CAMEL = {
    snake: camel
    for _, fields in KINDS.values()
    for camel, (snake, _) in {**COMMON, **fields}.items()
} | {"error_type": "error.type", "error_message": "error.message"}


@dataclass
class Problems:
    """Every bad field of a batch, by JSON path."""

    details: list[dict[str, str]] = field(default_factory=list)

    def add(self, path: str, message: str) -> None:
        if len(self.details) < 200:  # enough to fix a batch; bounded for a hostile one
            self.details.append({"field": path, "message": message})


class BadBatch(Exception):
    """The request is refused: ``status`` and an error body in the API's shape."""

    def __init__(self, status: int, code: str, message: str, details: list[dict[str, str]]):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate key in a JSON object")
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_body(raw: bytes, *, max_events: int) -> list[Any]:
    """The ``events`` list of a JSON body, or :class:`BadBatch`."""
    try:
        body = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_no_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadBatch(
            400, "invalid_json", f"the body is not valid JSON: {exc}"[:300], []
        ) from None
    if not isinstance(body, dict) or set(body) != {"events"}:
        detail = {"field": "events", "message": 'the body must be {"events": [...]}'}
        raise BadBatch(422, "invalid_body", "the body must be one object with events", [detail])
    events = body["events"]
    if not isinstance(events, list):
        raise BadBatch(
            422,
            "invalid_body",
            "events must be a list",
            [{"field": "events", "message": "must be a list"}],
        )
    if len(events) > max_events:
        raise BadBatch(
            413,
            "too_many_events",
            f"at most {max_events} events per batch",
            [{"field": "events", "message": f"has {len(events)} events, at most {max_events}"}],
        )
    return events


def to_events(
    items: list[Any], *, allowed: Callable[[str], bool], max_age_s: float, now: float | None = None
) -> list[Event]:
    """Each item as an event, or :class:`BadBatch` naming every bad field of every item."""
    now = time.time() if now is None else now
    problems = Problems()
    forbidden = Problems()
    events: list[Event] = []
    for i, item in enumerate(items):
        event = _one(item, f"events[{i}]", problems, max_age_s, now)
        if event is None:
            continue
        if not allowed(event.project_id):
            forbidden.add(f"events[{i}].projectId", "this key may not write to that project")
        events.append(event)
    if problems.details:
        raise BadBatch(
            422, "invalid_event", "some events are invalid; none was stored", problems.details
        )
    if forbidden.details:
        raise BadBatch(
            403, "forbidden_project", "the key may not write these events", forbidden.details
        )
    return events


def _one(item: Any, at: str, problems: Problems, max_age_s: float, now: float) -> Event | None:
    if not isinstance(item, dict):
        problems.add(at, "must be an object")
        return None
    kind = item.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        problems.add(f"{at}.kind", "must be one of " + ", ".join(sorted(KINDS)))
        return None
    cls, fields = KINDS[kind]
    known = {**COMMON, **fields}
    values: dict[str, Any] = {}
    before = len(problems.details)
    for name in item:
        if name not in known:
            problems.add(f"{at}.{name}"[:200], "is not a field of a " + kind + " event")
    for name in ("id", "projectId", "timestamp", *REQUIRED[kind]):
        if name not in item or item[name] is None:
            problems.add(f"{at}.{name}", "is required")
    raw_id = item.get("id")
    if isinstance(raw_id, str) and not _UUID.fullmatch(raw_id):
        problems.add(f"{at}.id", "must be a UUID (8-4-4-4-12 hex digits)")
    for name, value in item.items():
        if name == "kind" or name not in known or value is None:
            continue
        snake, convert = known[name]
        try:
            values[snake] = convert(value)
        except ValueError as exc:
            problems.add(f"{at}.{name}", str(exc))
    if kind == "function" and "error" in values:
        _unpack_error(values, at, problems)
    if len(problems.details) > before:
        return None
    values.pop("kind", None)
    if isinstance(raw_id, str):
        values["id"] = raw_id.lower()  # one event, however its client spells the UUID
    event = cls(**values)
    try:
        event.validate(now=now, max_age_s=max_age_s)
    except InvalidEventError as exc:
        for err in exc.errors:
            camel = SNAKE_TO_CAMEL.get(err.field, err.field)
            problems.add(f"{at}.{camel}", err.message)
        return None
    return event


def _unpack_error(values: dict[str, Any], at: str, problems: Problems) -> None:
    error = values.pop("error")
    if not isinstance(error, dict) or set(error) - {"type", "message"}:
        problems.add(f"{at}.error", 'must be {"type": ..., "message": ...}')
        return
    values["error_type"] = error.get("type")
    values["error_message"] = error.get("message")
