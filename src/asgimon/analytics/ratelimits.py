"""``GET /api/ratelimits/{projectId}``: who the host's rate limit refused, where, how often.

Totals and the trend come from the ``ratelimit:{denied|shadow}:{rule}`` rollups, whose sum
is every refusal; the keys and endpoints from the raw refusal records (one per key, rule
and second), the newest :data:`RAW_LIMIT` of the range, so ``sampled`` says when a long
flood leaves older ones out of those two lists.
"""

from __future__ import annotations

import asyncio
from typing import Any

from asgimon import series
from asgimon.events import RateLimitEvent

from .common import header, instant
from .query import Query

RAW_LIMIT = 5000
TOP = 20
RECENT = 50


def _top(rows: dict[Any, dict[str, Any]]) -> list[dict[str, Any]]:
    ranked = sorted(rows.values(), key=lambda r: (-(r["denied"] + r["shadow_denied"]), r["name"]))
    return ranked[:TOP]


async def ratelimits(q: Query) -> dict[str, Any]:
    per_bucket, raw = await asyncio.gather(
        q.rollups(series.RATE_LIMIT), q.events("ratelimit", RAW_LIMIT)
    )
    by_rule: dict[str, dict[str, Any]] = {}
    points: dict[int, list[int]] = {}
    for r in per_bucket:
        shadow, rule = series.rate_limit_parts(r.series)
        n = int(r.value_sum)
        entry = by_rule.setdefault(rule, {"rule": rule, "denied": 0, "shadow_denied": 0})
        entry["shadow_denied" if shadow else "denied"] += n
        points.setdefault(r.bucket_start, [0, 0])[1 if shadow else 0] += n
    trend = []
    bucket = int(q.span.start)
    while bucket < q.span.end:
        denied, shadow_denied = points.get(bucket, (0, 0))
        trend.append({"time": instant(bucket), "denied": denied, "shadow_denied": shadow_denied})
        bucket += q.span.width

    keys: dict[str, dict[str, Any]] = {}
    endpoints: dict[tuple[str, str], dict[str, Any]] = {}
    refusals = [e for e in raw if isinstance(e, RateLimitEvent)]
    for e in refusals:
        mode = "shadow_denied" if e.shadow else "denied"
        k = keys.setdefault(
            e.key,
            {
                "name": e.key,
                "key": e.key,
                "denied": 0,
                "shadow_denied": 0,
                "rules": set(),
                "last_at": e.last_at,
            },
        )
        k[mode] += e.count
        k["rules"].add(e.rule)
        k["last_at"] = max(k["last_at"], e.last_at)
        ep = endpoints.setdefault(
            (e.method, e.path),
            {
                "name": f"{e.method} {e.path}",
                "method": e.method,
                "path": e.path,
                "denied": 0,
                "shadow_denied": 0,
                "keys": set(),
            },
        )
        ep[mode] += e.count
        ep["keys"].add(e.key)
    top_keys = [
        {
            "key": k["key"],
            "denied": k["denied"],
            "shadow_denied": k["shadow_denied"],
            "rules": sorted(k["rules"]),
            "last_at": instant(k["last_at"]),
        }
        for k in _top(keys)
    ]
    top_endpoints = [
        {
            "method": ep["method"],
            "path": ep["path"],
            "denied": ep["denied"],
            "shadow_denied": ep["shadow_denied"],
            "keys": len(ep["keys"]),
        }
        for ep in _top(endpoints)
    ]
    recent = [
        {
            "time": instant(e.timestamp),
            "last_at": instant(e.last_at),
            "key": e.key,
            "rule": e.rule,
            "method": e.method,
            "path": e.path,
            "limit": e.limit,
            "window_s": e.window_s,
            "count": e.count,
            "shadow": e.shadow,
        }
        for e in sorted(refusals, key=lambda e: -e.last_at)[:RECENT]
    ]
    return {
        **header(q.project_id, q.span),
        "total_denied": sum(r["denied"] for r in by_rule.values()),
        "total_shadow_denied": sum(r["shadow_denied"] for r in by_rule.values()),
        "throttled_keys": len(keys),
        "by_rule": sorted(by_rule.values(), key=lambda r: (-r["denied"], r["rule"])),
        "top_keys": top_keys,
        "top_endpoints": top_endpoints,
        "denial_trend": trend,
        "recent_denials": recent,
        "sampled": len(raw) >= RAW_LIMIT,
    }
