"""A rule replayed over stored history before it is saved: when it would have fired.

Window rules step through the range at the evaluation period (at least a minute), each step
measured by the same functions the engine uses, over rollups read once per series prefix;
event rules replay the stored events (or, for the error-group rules, the groups' first
occurrences and regressions). Either way the state machine is the engine's, pending
duration and repeat interval included, so "3 times in the last 7 days" means three
firing notifications.
"""

from __future__ import annotations

import asyncio
import bisect
import math
from dataclasses import dataclass, field
from typing import Any

from asgimon.events import ErrorEvent
from asgimon.rollups import Rollup, Window, merge_per_series
from asgimon.storage.base import Storage

from .matching import EVENT_KINDS, match
from .measure import MEASURES, MINUTE_UP_TO_S
from .rules import AlertRule
from .state import FIRING, RESOLVED, AlertState, hit, judge, quiet

MAX_STEPS = 10_080
SLICE_STEPS = 20
"""Replayed steps between two yields to the event loop."""
MATCH_FIELDS = {
    "critical_error": {"severity": "critical"},
    "deployment_failure": {"type": "completed", "status": "failure"},
    "slow_deployment": {"type": "completed"},
    "function_error": {"status": "error"},
}
"""What the store can filter on before the replay matches: the newest events of the rule's
own kind, not the newest of any."""
MAX_EVENTS = 20_000
DAY = 86_400


@dataclass(slots=True)
class Replay:
    start: float
    end: float
    fired: list[float] = field(default_factory=list)
    resolved: list[float] = field(default_factory=list)
    notifications: int = 0
    evaluations: int = 0
    truncated: bool = False


class HistoryReader:
    """The rollups of each prefix over the whole replay, read once, summed per step."""

    def __init__(self, storage: Storage, project_id: str, resolution: str, lo: float, hi: float):
        self.storage = storage
        self.window = Window(project_id, resolution, lo, hi)
        self._rows: dict[str, tuple[list[int], list[Rollup]]] = {}

    async def merged(self, window: Window, prefix: str) -> list[Rollup]:
        rows = self._rows.get(prefix)
        if rows is None:
            read = await self.storage.rollups(self.window, prefix)
            read.sort(key=lambda r: r.bucket_start)
            rows = self._rows[prefix] = ([r.bucket_start for r in read], read)
        starts, found = rows
        lo = bisect.bisect_left(starts, window.start)
        hi = bisect.bisect_left(starts, window.end)
        return merge_per_series(found[lo:hi])


async def replay(
    rule: AlertRule, storage: Storage, *, now: float, days: int, period: float
) -> Replay:
    start = now - days * DAY
    out = Replay(start, now)
    if rule.is_event_rule:
        await _replay_events(rule, storage, out)
        return out
    step = max(60.0, float(period))
    if (now - start) / step > MAX_STEPS:
        step = (now - start) / MAX_STEPS
    step = float(math.ceil(step / 60) * 60)
    first = math.ceil(start / step) * step  # on the period grid, as the scheduler runs it
    resolution = "minute" if rule.window <= MINUTE_UP_TO_S else "hour"
    # Two windows before the start: the spike and slowdown rules compare with the previous.
    reader = HistoryReader(
        storage, rule.project_id, resolution, start - 2 * rule.window, now + 3600
    )
    state = AlertState()
    measure = MEASURES[rule.type]
    at = first
    while at <= now:
        if out.evaluations and not out.evaluations % SLICE_STEPS:
            await asyncio.sleep(0)  # a week of steps: let the host's requests in between
        m = await measure(rule, reader, at)
        state = _record(out, at, judge(rule, state, m.value, m.breached, at, m.labels))
        out.evaluations += 1
        at += step
    return out


def _record(out: Replay, at: float, step: tuple[AlertState, Any, str | None]) -> AlertState:
    state, notice, name = step
    if name == FIRING:
        out.fired.append(at)
    elif name == RESOLVED:
        out.resolved.append(at)
    if notice is not None:
        out.notifications += 1
    return state


async def _replay_events(rule: AlertRule, storage: Storage, out: Replay) -> None:
    times: list[tuple[float, Any]] = []
    if rule.type in ("new_error_group", "error_regression"):
        for g in await storage.error_groups(rule.project_id):
            if rule.filters.get("severity", g.severity) != g.severity:
                continue
            at = g.first_seen if rule.type == "new_error_group" else g.regressed_at
            if at is not None and out.start <= at < out.end:
                times.append((at, (float(g.count), {"fingerprint": g.fingerprint})))
    else:
        kind = EVENT_KINDS[rule.type]
        events = await storage.events(
            kind,
            project_id=rule.project_id,
            start=out.start,
            end=out.end,
            limit=MAX_EVENTS,
            match=MATCH_FIELDS.get(rule.type),
        )
        out.truncated = len(events) >= MAX_EVENTS
        for ev in events:
            if kind == "error" and not isinstance(ev, ErrorEvent):
                continue
            found = match(rule, ev)
            if found is not None:
                times.append((ev.timestamp, found))
    times.sort(key=lambda t: t[0])
    state = AlertState()
    for i, (at, (value, labels)) in enumerate(times):
        if i and not i % (SLICE_STEPS * 50):
            await asyncio.sleep(0)
        resolved = quiet(rule, state, at)
        if resolved is not None:
            state = _record(out, (state.last_match_at or at) + rule.window, resolved)
        state = _record(out, at, hit(rule, state, 1, value, labels, at))
        out.evaluations += 1
    last = quiet(rule, state, out.end)
    if last is not None and state.last_match_at is not None:
        _record(out, state.last_match_at + rule.window, last)
