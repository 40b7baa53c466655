"""The live figures of a project, from storage, so they hold across workers and hosts.

Read from the minute rollups every worker writes (each at its flush interval, one second by
default) and from the newest raw deployment events:

- ``requests_per_second``: the last 60 seconds, taking the part of the previous minute's
  bucket that the window still covers (rollups do not know where in a minute a call fell);
- ``errors_last_minute``: the same window, for errors;
- ``in_flight``: requests in progress across every worker, by Little's law (arrival rate
  times the mean duration over the same window): an estimate, where a per-process gauge
  would see one worker only;
- ``deployments_in_progress``: deployments whose newest event in the last six hours is not
  ``completed``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from asgimon.events import DeploymentEvent
from asgimon.rollups import Rollup, Window
from asgimon.series import API_TOTAL, ERROR_TOTAL

from .query import Reader

WINDOW_S = 60.0
DEPLOYMENT_LOOKBACK_S = 6 * 3600
DEPLOYMENT_EVENTS = 500


def _last_minute(rows: list[Rollup], series: str, now: float) -> tuple[float, float]:
    """(calls, duration sum in ms) of ``series`` in the 60 s before ``now``."""
    current = now // 60 * 60
    covered = 1 - (now - current) / 60  # of the previous bucket, still inside the window
    calls = duration = 0.0
    for r in rows:
        if r.series != series:
            continue
        if r.bucket_start == current:
            weight = 1.0
        elif r.bucket_start == current - 60:
            weight = covered
        else:
            continue
        calls += r.count * weight
        duration += r.value_sum * weight
    return calls, duration


async def live_figures(storage: Reader, project_id: str, now: float) -> dict[str, Any]:
    current = now // 60 * 60
    rows, recent = await asyncio.gather(
        storage.rollups(
            Window(project_id, "minute", current - 60, current + 60), (API_TOTAL, ERROR_TOTAL)
        ),
        storage.events(
            "deployment",
            project_id=project_id,
            start=now - DEPLOYMENT_LOOKBACK_S,
            limit=DEPLOYMENT_EVENTS,
        ),
    )
    calls, duration_ms = _last_minute(rows, API_TOTAL, now)
    errors, _ = _last_minute(rows, ERROR_TOTAL, now)
    newest: dict[str, DeploymentEvent] = {}
    for ev in recent:  # newest first
        if isinstance(ev, DeploymentEvent):
            newest.setdefault(ev.deployment_id, ev)
    rate = calls / WINDOW_S
    mean_s = duration_ms / calls / 1000 if calls else 0.0
    return {
        "project_id": project_id,
        "requests_per_second": rate,
        "in_flight": rate * mean_s,
        "errors_last_minute": round(errors),
        "deployments_in_progress": sum(1 for e in newest.values() if e.type != "completed"),
    }
