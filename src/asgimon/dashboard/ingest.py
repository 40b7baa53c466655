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
from asgimon.events import EVENT_TYPES, Event
from asgimon.fields import declared

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
CONVERTERS: dict[str, Convert] = {
    "text": _text,
    "long_text": _text,
    "json": _text,
    "float": _number,
    "small_int": _integer,
    "big_int": _integer,
    "bool": _flag,
    "instant": _instant,
}


@dataclass(frozen=True)
class WireKind:
    """How one kind of event is posted: its JSON names, checks and required fields, all
    from the fields its class declares (a dotted wire name, ``error.type``, is a member of
    a nested object)."""

    cls: type[Event]
    fields: dict[str, tuple[str, Convert]]  # top-level JSON name -> (field, converter)
    groups: dict[str, dict[str, tuple[str, Convert]]]  # nested object -> its members
    required: tuple[str, ...]  # top-level JSON names
    group_required: dict[str, tuple[str, ...]]  # nested object -> members it must have
    choices: dict[str, frozenset[str]]  # JSON name -> the values it may take

    @classmethod
    def of(cls, event_cls: type[Event]) -> WireKind:
        fields: dict[str, tuple[str, Convert]] = {}
        groups: dict[str, dict[str, tuple[str, Convert]]] = {}
        required: list[str] = []
        group_required: dict[str, list[str]] = {}
        choices: dict[str, frozenset[str]] = {}
        for f in declared(event_cls):
            convert = CONVERTERS[f.spec.kind.name]
            group, _, member = f.wire.rpartition(".")
            if group:
                groups.setdefault(group, {})[member] = (f.name, convert)
                if f.spec.required:
                    group_required.setdefault(group, []).append(member)
                continue
            fields[f.wire] = (f.name, convert)
            if f.spec.required:
                required.append(f.wire)
            if f.spec.choices is not None:
                choices[f.wire] = f.spec.choices
        return cls(
            event_cls,
            fields,
            groups,
            tuple(required),
            {g: tuple(m) for g, m in group_required.items()},
            choices,
        )

    def wire_name(self, field_name: str) -> str:
        """A field's JSON path, for naming it in an error."""
        for name, (snake, _) in {**COMMON, **self.fields}.items():
            if snake == field_name:
                return name
        for group, members in self.groups.items():
            for member, (snake, _) in members.items():
                if snake == field_name:
                    return f"{group}.{member}"
        return field_name


_wire: tuple[tuple[type[Event], ...], dict[str, WireKind]] = ((), {})


def wire_kinds() -> dict[str, WireKind]:
    """The kinds clients may post, by name: every registered class with ``ingest`` set."""
    global _wire
    classes = tuple(EVENT_TYPES.values())
    if _wire[0] != classes:  # a kind registered since: read the registry again
        _wire = (classes, {c.kind: WireKind.of(c) for c in classes if c.ingest})
    return _wire[1]


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
    kinds = wire_kinds()
    if not isinstance(kind, str) or kind not in kinds:
        problems.add(f"{at}.kind", "must be one of " + ", ".join(sorted(kinds)))
        return None
    wire = kinds[kind]
    known = {**COMMON, **wire.fields}
    values: dict[str, Any] = {}
    before = len(problems.details)
    for name in item:
        if name not in known and name not in wire.groups:
            problems.add(f"{at}.{name}"[:200], "is not a field of a " + kind + " event")
    for name in ("id", "projectId", "timestamp", *wire.required):
        if name not in item or item[name] is None:
            problems.add(f"{at}.{name}", "is required")
    raw_id = item.get("id")
    if isinstance(raw_id, str) and not _UUID.fullmatch(raw_id):
        problems.add(f"{at}.id", "must be a UUID (8-4-4-4-12 hex digits)")
    for name, value in item.items():
        if name == "kind" or value is None:
            continue
        if name in wire.groups:
            _unpack(wire, name, value, values, f"{at}.{name}", problems)
            continue
        if name not in known:
            continue
        snake, convert = known[name]
        try:
            values[snake] = convert(value)
        except ValueError as exc:
            problems.add(f"{at}.{name}", str(exc))
    if len(problems.details) > before:
        return None
    values.pop("kind", None)
    if isinstance(raw_id, str):
        values["id"] = raw_id.lower()  # one event, however its client spells the UUID
    event = wire.cls(**values)
    try:
        event.validate(now=now, max_age_s=max_age_s)
    except InvalidEventError as exc:
        for err in exc.errors:
            problems.add(f"{at}.{wire.wire_name(err.field)}", err.message)
        return None
    return event


def _unpack(
    wire: WireKind,
    group: str,
    value: Any,
    values: dict[str, Any],
    at: str,
    problems: Problems,
) -> None:
    """A nested object (a function's ``error``) into the fields its members stand for."""
    members = wire.groups[group]
    if not isinstance(value, dict) or set(value) - set(members):
        problems.add(at, "must be {" + ", ".join(f'"{m}": ...' for m in members) + "}")
        return
    for member in wire.group_required.get(group, ()):
        if value.get(member) is None:
            problems.add(f"{at}.{member}", "is required")
    for member, (snake, convert) in members.items():
        if value.get(member) is None:
            continue
        try:
            values[snake] = convert(value[member])
        except ValueError as exc:
            problems.add(f"{at}.{member}", str(exc))
