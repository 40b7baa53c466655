"""Refusals of the host's rate limit, counted as they happen and recorded once a second.

A client hammering a limit is refused thousands of times a second; one event per refusal
would fill the recorder's queue and crowd out the requests it exists to record. Here each
(project, key, rule, method, path, mode) counts its refusals for up to ``interval`` seconds
and becomes one :class:`~asgimon.events.RateLimitEvent` with the count, so the rollups still
sum every refusal while the queue takes at most one event per open entry per interval.
Entries open at once are bounded; past the bound the log is flushed early.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

from starlette.types import Scope

from asgimon.events import RateLimitEvent

from .middleware import Denial

INTERVAL_S = 1.0
MAX_OPEN = 1000
MAX_PATH = 400
_ID_SEGMENT = re.compile(
    r"(?<=/)(?:\d+|[0-9a-fA-F]{16,}|[0-9a-fA-F]{8}-[0-9a-fA-F-]{27,}|[\w-]{32,})(?=/|$)"
)

Put = Callable[[RateLimitEvent], object]
ProjectOf = Callable[[Scope], str]


def shape(path: str) -> str:
    """A path with its id-like segments (numbers, hex, UUIDs, long tokens) as ``{id}``: the
    endpoint is known without the router, and no token in a path is kept."""
    return _ID_SEGMENT.sub("{id}", path)[:MAX_PATH]


class DenialLog:
    def __init__(
        self,
        put: Put,
        project_of: ProjectOf,
        *,
        interval: float = INTERVAL_S,
        max_open: int = MAX_OPEN,
    ) -> None:
        self._put = put
        self._project_of = project_of
        self.interval = interval
        self.max_open = max_open
        self._open: dict[tuple[Any, ...], list[Any]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self.recorded = 0

    def __call__(self, denial: Denial, scope: Scope) -> None:
        now = time.time()
        entry_key = (
            self._project_of(scope),
            denial.key,
            denial.rule.name,
            denial.method,
            shape(denial.path),
            denial.shadow,
        )
        entry = self._open.get(entry_key)
        if entry is not None:
            entry[1] = now
            entry[2] += 1
            return
        if len(self._open) >= self.max_open:
            self.flush()
        self._open[entry_key] = [now, now, 1, denial.standing.limit, denial.standing.window_s]
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop (a synchronous caller): the next flush takes it
            self._timer = loop.call_later(self.interval, self.flush)

    def flush(self) -> None:
        """Hand every open entry to the recorder as one event each."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        held, self._open = self._open, {}
        for (project, key, rule, method, path, shadow), entry in held.items():
            first, last, count, limit, window_s = entry
            self._put(
                RateLimitEvent(
                    project_id=project,
                    timestamp=first,
                    last_at=last,
                    key=key,
                    rule=rule,
                    method=method,
                    path=path,
                    limit=limit,
                    window_s=window_s,
                    count=count,
                    shadow=shadow,
                )
            )
            self.recorded += 1
