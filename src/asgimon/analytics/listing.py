"""``GET /api/events/{projectId}?kind=…``: the raw events of one kind, newest first."""

from __future__ import annotations

from typing import Any

from asgimon.events import EVENT_TYPES

from .common import header
from .query import Query

MAX_LIMIT = 1000


async def events(q: Query) -> dict[str, Any]:
    """The events themselves: the web layer writes each in its wire form."""
    kind = q.choice_param("kind", tuple(EVENT_TYPES), "api_call") or "api_call"
    limit = q.int_param("limit", 100, 1, MAX_LIMIT)
    found = await q.events(kind, limit)
    return {**header(q.project_id, q.span), "kind": kind, "events": found}
