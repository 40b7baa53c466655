"""Analytics figures in the API's wire form: camelCase names, ISO 8601 instants.

Analytics answer plain figures (snake_case, ``datetime``, ``date``, events as objects) so
that alert rules and pages read them as they are; only the JSON API spells them for the
wire, here, in one place.
"""

from __future__ import annotations

from datetime import date, datetime
from functools import lru_cache
from typing import Any

from asgimon.analytics.common import Verbatim
from asgimon.events import Event
from asgimon.fields import INSTANT, camel, declared


@lru_cache(maxsize=1024)
def _name(key: str) -> str:
    return camel(key)


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def to_wire(value: Any) -> Any:
    """``value`` with every mapping's keys in camelCase and every instant as ISO text.

    Every mapping an analytics computation answers is named by code, never by data (lists
    of ``{"framework": …, "count": …}``, not ``{framework: count}``), so each key is a name.
    """
    if isinstance(value, dict):
        return {_name(k): to_wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_wire(v) for v in value]
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Event):
        return event(value)
    if isinstance(value, Verbatim):
        return value.value
    return value


def event(ev: Event) -> dict[str, Any]:
    """One stored event as ingestion takes it; its free-form objects (an error's context)
    keep the keys they were given."""
    out: dict[str, Any] = {"kind": ev.kind, "id": ev.id, "projectId": ev.project_id}
    out["timestamp"] = iso(ev.at)
    for f in declared(type(ev)):
        value = getattr(ev, f.name)
        if f.spec.kind is INSTANT and value is not None:
            value = iso(datetime.fromtimestamp(value, ev.at.tzinfo))
        out[camel(f.name)] = value
    return out
