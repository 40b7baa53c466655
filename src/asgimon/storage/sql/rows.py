"""Events to SQL rows and back; rollups to rows. Pure functions, shared by both dialects."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any

from sqlalchemy.engine import Row

from asgimon import histogram
from asgimon.events import EVENT_TYPES, Event
from asgimon.fields import INSTANT, JSON, declared
from asgimon.rollups import Rollup

_STAMPS = ("created_at", "received_at")


@functools.cache
def _converted(kind: str | None) -> dict[str, str]:
    """The columns of a kind's table that are not stored as the event holds them."""
    found = dict.fromkeys(_STAMPS, "stamp")
    if kind is not None:
        for f in declared(EVENT_TYPES[kind]):
            if f.spec.kind in (INSTANT, JSON):
                found[f.name] = f.spec.kind.name
    return found


def us(seconds: float) -> int:
    return round(seconds * 1_000_000)


RowMaker = Callable[[Event, int], tuple[Any, ...]]


def _column_value(name: str, how: str) -> Callable[[Event, int], Any]:
    """How one column's value is read off an event (``received`` is the write's time)."""
    if name == "created_at":
        return lambda ev, received: us(ev.timestamp)
    if name == "received_at":
        return lambda ev, received: received
    get = attrgetter(name)
    if how == "instant":
        return lambda ev, received: None if (v := get(ev)) is None else us(v)
    return lambda ev, received: json.dumps(get(ev), default=str, separators=(",", ":"))


def row_maker(columns: Sequence[str], kind: str | None = None) -> tuple[tuple[str, ...], RowMaker]:
    """``columns`` in the order of the tuples made, and what makes an event's row as a tuple.

    The columns read as they are from the event's attributes come first, fetched by one
    ``attrgetter``: on the hottest path (an API call, nothing to convert but its time) a row
    is one C call and a tuple concatenation, where a dict per row cost several times that.
    """
    converted = _converted(kind)
    special = [c for c in columns if c in converted]
    direct = [c for c in columns if c not in converted]
    values = tuple(_column_value(c, converted[c]) for c in special)
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
    for f in declared(EVENT_TYPES[kind]):
        value = data[f.name]
        if f.spec.kind is INSTANT:
            value = None if value is None else value / 1_000_000
        elif f.spec.kind is JSON:
            value = json.loads(value)
        values[f.name] = value
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
