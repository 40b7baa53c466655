"""``GET /api/events/{projectId}?kind=…``: the raw events of one kind, newest first."""

from __future__ import annotations

from typing import Any

from asgimon.events import EVENT_TYPES, Event
from asgimon.fields import INSTANT, camel, declared

from .common import header, iso
from .query import Query

MAX_LIMIT = 1000


def to_json(ev: Event) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": ev.kind, "id": ev.id, "projectId": ev.project_id}
    out["timestamp"] = iso(ev.timestamp)
    for f in declared(type(ev)):
        value = getattr(ev, f.name)
        if f.spec.kind is INSTANT and value is not None:
            value = iso(value)
        out[camel(f.name)] = value
    return out


async def events(q: Query) -> dict[str, Any]:
    kind = q.choice_param("kind", tuple(EVENT_TYPES), "api_call") or "api_call"
    limit = q.int_param("limit", 100, 1, MAX_LIMIT)
    found = await q.events(kind, limit)
    return {**header(q.project_id, q.span), "kind": kind, "events": [to_json(e) for e in found]}
