"""``GET /api/builds/{projectId}``: build durations, phases, outcomes and frameworks.

Build events are phases (clone, install, build, optimize, upload) sharing a deployment id.
The rollups count phase runs per ``build:{phase}:{framework}``. A build is counted once, by
its ``clone`` phase, which every build starts with; a build stops at its first failed phase,
so each failed build is exactly one failed phase run. A build's duration is the sum of its
phases, so the average build time is all phase time over the number of builds.
"""

from __future__ import annotations

import asyncio
from typing import Any

from asgimon import series
from asgimon.events import BuildEvent
from asgimon.rollups import Rollup

from .common import group, header, instant, ratio, trend
from .query import Query

RECENT_PHASES = 500
PHASES = ("clone", "install", "build", "optimize", "upload")
FIRST_PHASE = PHASES[0]


def is_build_start(name: str) -> bool:
    return name.startswith(series.BUILD) and series.build_parts(name)[0] == FIRST_PHASE


async def builds(q: Query) -> dict[str, Any]:
    span = q.span
    # Independent reads run together: each is a round trip, and a pool serves them at once.
    per_series, phase_runs, build_starts, recent = await asyncio.gather(
        q.series_rollups(series.BUILD),
        q.bucket_totals(series.BUILD),
        q.bucket_totals(f"{series.BUILD}{FIRST_PHASE}:"),
        q.events("build", RECENT_PHASES),
    )
    starts = [r for r in per_series if is_build_start(r.series)]
    total = sum(r.count for r in starts)
    # A retried phase can fail twice in one build, and a build begun before the range can
    # fail inside it: a rate stays a rate.
    failed = min(total, sum(r.error_count for r in per_series))
    phase_time = sum(r.value_sum for r in per_series)
    per_phase = group(per_series, lambda r: series.build_parts(r.series)[0])
    per_framework = group(starts, lambda r: series.build_parts(r.series)[1])
    order = {p: i for i, p in enumerate(PHASES)}

    def trend_point(r: Rollup) -> dict[str, Any]:
        # ``r`` sums every phase of one bucket; builds are its clone runs.
        return {"builds": r.count, "failures": r.error_count, "avg_duration": r.avg}

    builds_in = {r.bucket_start: r.count for r in build_starts}
    for point in phase_runs:
        # avg = all phase time / builds in that bucket
        point.count = point.value_count = builds_in.get(point.bucket_start, 0)
    return {
        **header(q.project_id, span),
        "total_builds": total,
        "success_rate": ratio(total - failed, total),
        "failure_rate": ratio(failed, total),
        "avg_duration": phase_time / total if total else None,
        "duration_trend": trend(phase_runs, span, trend_point),
        "phase_durations": [
            {"phase": phase, **_phase(r)}
            for phase, r in sorted(per_phase.items(), key=lambda kv: order.get(kv[0], 99))
        ],
        "framework_usage": [
            {"framework": f, "count": r.count, "share": ratio(r.count, total)}
            for f, r in per_framework.items()
        ],
        "builds": _builds([ev for ev in recent if isinstance(ev, BuildEvent)]),
    }


def _phase(r: Rollup) -> dict[str, Any]:
    p50, p95 = r.quantiles((0.5, 0.95))
    return {
        "count": r.count,
        "failures": r.error_count,
        "avg_duration": r.avg,
        "p50_duration": p50,
        "p95_duration": p95,
    }


def _builds(phases: list[BuildEvent]) -> list[dict[str, Any]]:
    """The most recent builds, one row per deployment, assembled from their phase events."""
    by_deployment: dict[str, list[BuildEvent]] = {}
    for ev in phases:  # newest first, so dict order is newest build first
        by_deployment.setdefault(ev.deployment_id, []).append(ev)
    out = []
    for deployment_id, evs in by_deployment.items():
        evs.sort(key=lambda e: e.start_time)
        out.append(
            {
                "deployment_id": deployment_id,
                "framework": next((e.framework for e in evs if e.framework), None),
                "status": "failure" if any(e.status == "failure" for e in evs) else "success",
                "start_time": instant(evs[0].start_time),
                "end_time": instant(max(e.end_time for e in evs)),
                "duration_ms": sum(e.duration_ms for e in evs),
                "asset_count": next(
                    (e.asset_count for e in reversed(evs) if e.asset_count is not None), None
                ),
                "total_size_bytes": next(
                    (e.total_size_bytes for e in reversed(evs) if e.total_size_bytes is not None),
                    None,
                ),
                "phases": [
                    {"phase": e.phase, "status": e.status, "duration_ms": e.duration_ms}
                    for e in evs
                ],
            }
        )
    return out
