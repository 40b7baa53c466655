"""Events to SQL rows and back; rollups to rows. Pure functions, shared by both dialects."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any

from sqlalchemy.engine import Row

from asgimon import histogram
from asgimon.events import EVENT_TYPES, Event
from asgimon.rollups import Rollup

_TIME_FIELDS = frozenset({"start_time", "end_time", "expires_at"})
_CONVERTED = _TIME_FIELDS | {"created_at", "received_at", "context"}
_BASE_FIELDS = frozenset({"id", "project_id", "timestamp"})
_FIELDS: dict[str, tuple[str, ...]] = {
    kind: tuple(f.name for f in dataclasses.fields(cls) if f.name not in _BASE_FIELDS)
    for kind, cls in EVENT_TYPES.items()
}


def us(seconds: float) -> int:
    return round(seconds * 1_000_000)


RowMaker = Callable[[Event, int], tuple[Any, ...]]


def _column_value(name: str) -> Callable[[Event, int], Any]:
    """How one column's value is read off an event (``received`` is the write's time)."""
    if name == "created_at":
        return lambda ev, received: us(ev.timestamp)
    if name == "received_at":
        return lambda ev, received: received
    get = attrgetter(name)
    if name in _TIME_FIELDS:
        return lambda ev, received: None if (v := get(ev)) is None else us(v)
    if name == "context":
        return lambda ev, received: json.dumps(get(ev), default=str, separators=(",", ":"))
    raise ValueError(f"column {name!r} is not read as it is")


def row_maker(columns: Sequence[str]) -> tuple[tuple[str, ...], RowMaker]:
    """``columns`` in the order of the tuples made, and what makes an event's row as a tuple.

    The columns read as they are from the event's attributes come first, fetched by one
    ``attrgetter``: on the hottest path (an API call, nothing to convert but its time) a row
    is one C call and a tuple concatenation, where a dict per row cost several times that.
    """
    special = [c for c in columns if c in _CONVERTED]
    direct = [c for c in columns if c not in _CONVERTED]
    values = tuple(_column_value(c) for c in special)
    get = attrgetter(*direct) if len(direct) > 1 else (lambda ev: (getattr(ev, direct[0]),))
    if special == ["created_at", "received_at"]:

        def make(ev: Event, received: int) -> tuple[Any, ...]:
            return (*get(ev), us(ev.timestamp), received)

    else:

        def make(ev: Event, received: int) -> tuple[Any, ...]:
            return (*get(ev), *[value(ev, received) for value in values])

    return (*direct, *special), make


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
