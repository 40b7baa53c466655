"""Events to SQL rows and back; rollups to rows. Pure functions, shared by both dialects."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from sqlalchemy.engine import Row

from asgimon import histogram
from asgimon.events import EVENT_TYPES, Event
from asgimon.rollups import Rollup

_TIME_FIELDS = frozenset({"start_time", "end_time", "expires_at"})
_BASE_FIELDS = frozenset({"id", "project_id", "timestamp"})
_FIELDS: dict[str, tuple[str, ...]] = {
    kind: tuple(f.name for f in dataclasses.fields(cls) if f.name not in _BASE_FIELDS)
    for kind, cls in EVENT_TYPES.items()
}


def us(seconds: float) -> int:
    return round(seconds * 1_000_000)


def to_row(ev: Event, received_us: int) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": ev.id,
        "project_id": ev.project_id,
        "created_at": us(ev.timestamp),
        "received_at": received_us,
    }
    for name in _FIELDS[ev.kind]:
        value = getattr(ev, name)
        if name in _TIME_FIELDS and value is not None:
            value = us(value)
        elif name == "context":
            value = json.dumps(value, default=str, separators=(",", ":"))
        row[name] = value
    return row


def id_row(ev: Event) -> dict[str, Any]:
    """What is kept of an event sampling left out: enough to find it again."""
    return {"project_id": ev.project_id, "created_at": us(ev.timestamp), "id": ev.id}


def from_row(kind: str, row: Row[Any]) -> Event:
    data = row._mapping
    values: dict[str, Any] = {
        "id": data["id"],
        "project_id": data["project_id"],
        "timestamp": data["created_at"] / 1_000_000,
    }
    for name in _FIELDS[kind]:
        value = data[name]
        if name in _TIME_FIELDS and value is not None:
            value = value / 1_000_000
        elif name == "context":
            value = json.loads(value)
        values[name] = value
    return EVENT_TYPES[kind](**values)


def rollup_row(r: Rollup) -> dict[str, Any]:
    return {
        "project_id": r.project_id,
        "resolution": r.resolution,
        "series": r.series,
        "bucket_start": r.bucket_start,
        "count": r.count,
        "error_count": r.error_count,
        "value_count": r.value_count,
        "value_sum": r.value_sum,
        "value_min": r.value_min,
        "value_max": r.value_max,
        "hist": histogram.dumps(r.hist),
    }
