"""Each page: the analytics figures it shows, read through the same computations as the
JSON API (so a page and ``/api/…`` always agree), filtered as the URL asks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from asgimon.analytics.builds import builds
from asgimon.analytics.deployments import deployments
from asgimon.analytics.error_detail import error_group
from asgimon.analytics.error_groups import STATUSES as GROUP_STATUSES
from asgimon.analytics.error_groups import errors
from asgimon.analytics.functions import functions
from asgimon.analytics.live import live_figures
from asgimon.analytics.performance import SORTS, endpoint_latency, performance
from asgimon.analytics.query import Query
from asgimon.analytics.ranges import BadQuery
from asgimon.events import DeploymentEvent

from .charts import Chart, Format, Line, Marker, bar_list, time_chart
from .context import PageContext
from .formats import count, ms, pct
from .streamed import Panel

Figures = dict[str, Any]
MakeQuery = Callable[[PageContext, str], Query]
OUTCOMES = ("success", "failure")
MARKER_DEPLOYMENTS = 100
STATEMENTS_SHOWN = 10  # of each ordering, in a page's "Database queries"


@dataclass(frozen=True)
class Page:
    path: str  # under the mount
    name: str  # in the navigation; "" for pages reached from another
    template: str
    view: Callable[[PageContext, MakeQuery], Awaitable[Figures]]
    filters: tuple[str, ...] = ()  # of FILTER_CHOICES, offered in the controls
    live: bool = False  # shows the live figures
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)  # this page's own
    forms: bool = False  # has forms that post back: the page hands out a CSRF token
    finish: Callable[[Request, Response], None] | None = None  # e.g. a shown message cleared
    # Sent in parts (see streamed.py): the view starts its reads and returns them, by name,
    # unawaited; each panel awaits those it shows.
    panels: tuple[Panel, ...] = ()


def _times(trend: list[Figures]) -> list[datetime]:
    return [p["time"] for p in trend]


def trend_chart(
    title: str,
    trend: list[Figures],
    lines: dict[str, str],
    markers: list[Marker],
    *,
    fmt: Format = count,
    bars: bool = False,
) -> Chart:
    """A chart of a trend's points: ``lines`` maps each line's name to its figure."""
    return time_chart(
        title,
        _times(trend),
        [Line(name, [point[key] for point in trend]) for name, key in lines.items()],
        fmt=fmt,
        markers=markers,
        bars=bars,
    )


def _matching(rows: list[Figures], ctx: PageContext, *filters: str) -> list[Figures]:
    """The rows whose figure equals each of ``filters`` the URL sets."""
    for name in filters:
        if name in ctx.filters:
            rows = [r for r in rows if r[name] == ctx.filters[name]]
    return rows


async def deploy_markers(ctx: PageContext, query: MakeQuery) -> list[Marker]:
    """The completed deployments of the range: a line on every time chart."""
    found = await query(ctx, ctx.project_id).events("deployment", MARKER_DEPLOYMENTS)
    return [
        Marker(
            datetime.fromtimestamp(e.timestamp, UTC),
            f"deployment {e.deployment_id} ({e.status})",
            e.status == "failure",
        )
        for e in found
        if isinstance(e, DeploymentEvent) and e.type == "completed"
    ]


async def live_now(ctx: PageContext, query: MakeQuery) -> Figures:
    """The live figures as of now, so that a page without JavaScript shows them too."""
    return await live_figures(query(ctx, ctx.project_id).storage, ctx.project_id, ctx.now)


async def deployments_page(ctx: PageContext, query: MakeQuery) -> Figures:
    f, markers = await asyncio.gather(
        deployments(query(ctx, ctx.project_id)), deploy_markers(ctx, query)
    )
    trend = f["deployment_trend"]
    listed = _matching(f["deployments"], ctx, "status", "type")
    durations = [d["duration_ms"] for d in f["deployments"] if d["duration_ms"] is not None]
    charts = [
        trend_chart(
            "Deployments", trend, {"deployments": "count", "failed": "failures"}, markers, bars=True
        ),
        trend_chart(
            "Average deployment duration", trend, {"average": "avg_duration"}, markers, fmt=ms
        ),
        bar_list(
            "Success and failure",
            [(r["status"], r["count"]) for r in f["deployments_by_status"]],
        ),
        bar_list(
            "Frameworks",
            [(r["framework"], r["count"]) for r in f["framework_distribution"]],
        ),
        bar_list("Duration distribution (recent deployments)", _duration_buckets(durations)),
        bar_list(
            "Deployments per day", [(str(r["date"]), r["count"]) for r in f["deployments_by_date"]]
        ),
    ]
    return {"f": f, "charts": charts, "listed": listed}


DURATION_EDGES_MS = (30_000.0, 60_000.0, 120_000.0, 300_000.0, 600_000.0)


def _duration_buckets(values: list[float]) -> list[tuple[str, float | None]]:
    out: list[tuple[str, float | None]] = []
    lo = 0.0
    for hi in DURATION_EDGES_MS:
        out.append((f"{ms(lo)} to {ms(hi)}", sum(1 for v in values if lo <= v < hi)))
        lo = hi
    out.append((f"≥ {ms(lo)}", sum(1 for v in values if v >= lo)))
    return out


async def functions_page(ctx: PageContext, query: MakeQuery) -> Figures:
    f, markers, live = await asyncio.gather(
        functions(query(ctx, ctx.project_id)), deploy_markers(ctx, query), live_now(ctx, query)
    )
    trend = f["invocation_trend"]
    rows = sorted(f["functions"], key=lambda r: -r["invocations"])
    charts = [
        trend_chart(
            "Invocations",
            trend,
            {"invocations": "invocations", "errors": "errors"},
            markers,
            bars=True,
        ),
        trend_chart(
            "Average execution time", trend, {"average": "avg_execution_time"}, markers, fmt=ms
        ),
        bar_list(
            "Execution time distribution",
            [
                (
                    f"{ms(b['from_ms'])} to {ms(b['to_ms'])}"
                    if b["to_ms"]
                    else f"≥ {ms(b['from_ms'])}",
                    b["count"],
                )
                for b in f["execution_time_distribution"]
            ],
        ),
        bar_list(
            "Error rate per function",
            [(r["function_id"], r["error_rate"]) for r in rows[:20]],
            fmt=pct,
        ),
    ]
    return {"f": f, "charts": charts, "rows": rows, "live": live}


async def builds_page(ctx: PageContext, query: MakeQuery) -> Figures:
    f, markers = await asyncio.gather(
        builds(query(ctx, ctx.project_id)), deploy_markers(ctx, query)
    )
    trend = f["duration_trend"]
    listed = _matching(f["builds"], ctx, "status")
    charts = [
        trend_chart("Average build duration", trend, {"average": "avg_duration"}, markers, fmt=ms),
        trend_chart(
            "Builds", trend, {"builds": "builds", "failed phases": "failures"}, markers, bars=True
        ),
        bar_list(
            "Average duration per phase",
            [(r["phase"], r["avg_duration"]) for r in f["phase_durations"]],
            fmt=ms,
        ),
        bar_list("Frameworks", [(r["framework"], r["count"]) for r in f["framework_usage"]]),
    ]
    return {"f": f, "charts": charts, "listed": listed}


async def errors_page(ctx: PageContext, query: MakeQuery) -> Figures:
    # The figures come filtered (status, type, severity, endpoint) from the URL's query,
    # which the page shares with GET /api/errors.
    f, markers = await asyncio.gather(
        errors(query(ctx, ctx.project_id)), deploy_markers(ctx, query)
    )
    trend = f["error_trend"]
    charts = [
        trend_chart("Errors", trend, {"errors": "count"}, markers, bars=True),
        bar_list("By type", [(r["type"], r["count"]) for r in f["errors_by_type"][:12]]),
        bar_list("By severity", [(r["severity"], r["count"]) for r in f["errors_by_severity"]]),
    ]
    return {"f": f, "charts": charts, "groups": f["groups"], "recent": f["recent_errors"]}


async def error_group_page(ctx: PageContext, query: MakeQuery) -> Figures:
    fingerprint = ctx.request.path_params["fingerprint"]
    q = query(ctx, ctx.project_id)
    found, markers = await asyncio.gather(error_group(q, fingerprint), deploy_markers(ctx, query))
    if found is None:
        raise BadQuery("fingerprint", "no error group with this fingerprint in this project")
    chart = trend_chart("Occurrences", found["trend"], {"errors": "count"}, markers, bars=True)
    return {"g": found, "chart": chart, "exception": found["exception"].value}


async def performance_page(ctx: PageContext, query: MakeQuery) -> Figures:
    q = query(ctx, ctx.project_id)
    f, markers = await asyncio.gather(performance(q), deploy_markers(ctx, query))
    rows = f["endpoints"]
    if "endpoint" in ctx.filters:
        rows = [r for r in rows if ctx.filters["endpoint"] in r["endpoint"]]
    trend = f["latency_trend"]
    charts = [
        trend_chart("API latency", trend, {"average": "avg", "p95": "p95"}, markers, fmt=ms),
        trend_chart(
            "Requests", trend, {"requests": "count", "errors": "errors"}, markers, bars=True
        ),
    ]
    sort = ctx.request.query_params.get("sort", "count")
    queries = f["queries"]
    if "endpoint" in ctx.filters:
        queries = [r for r in queries if ctx.filters["endpoint"] in r["endpoint"]]
    return {
        "f": f,
        "charts": charts,
        "rows": rows,
        "sort": sort,
        "sorts": tuple(SORTS),
        "statements": statement_tables(queries, per_endpoint=True),
    }


async def endpoint_page(ctx: PageContext, query: MakeQuery) -> Figures:
    params = ctx.request.query_params
    method, endpoint = params.get("method"), ctx.filters.get("endpoint")
    if not method:
        raise BadQuery("method", "is required")
    if len(method) > 16 or not (method.isascii() and method.isalpha() and method.isupper()):
        raise BadQuery("method", "must be an HTTP method in capitals, such as GET")
    if not endpoint:
        raise BadQuery("endpoint", "is required")
    f, markers = await asyncio.gather(
        endpoint_latency(query(ctx, ctx.project_id), method, endpoint), deploy_markers(ctx, query)
    )
    trend = f["latency_trend"]
    charts = [
        time_chart(
            "Latency",
            _times(trend),
            [Line(n, [p[n] for p in trend]) for n in ("p50", "p95", "p99")],
            fmt=ms,
            markers=markers,
        ),
        trend_chart(
            "Requests", trend, {"requests": "count", "errors": "errors"}, markers, bars=True
        ),
    ]
    return {"f": f, "charts": charts, "statements": statement_tables(f["queries"])}


def statement_tables(queries: list[dict[str, Any]], per_endpoint: bool = False) -> Figures:
    """The slowest statements by total time and the most frequent by calls, ten of each."""
    return {
        "slowest": sorted(queries, key=lambda r: -r["total_ms"])[:STATEMENTS_SHOWN],
        "frequent": sorted(queries, key=lambda r: -r["calls"])[:STATEMENTS_SHOWN],
        "per_endpoint": per_endpoint,
    }


PAGES: tuple[Page, ...] = (
    Page(
        "/deployments",
        "Deployments",
        "deployments.html",
        deployments_page,
        ("status", "type"),
        choices={"status": OUTCOMES},
    ),
    Page("/functions", "Functions", "functions.html", functions_page, live=True),
    Page(
        "/builds", "Builds", "builds.html", builds_page, ("status",), choices={"status": OUTCOMES}
    ),
    Page(
        "/errors",
        "Errors",
        "errors.html",
        errors_page,
        ("status", "severity", "type", "endpoint", "deployment"),
        choices={"status": GROUP_STATUSES},
        forms=True,
    ),
    # :path: a fingerprint is the client's text, "/" included (sent as %2F).
    Page("/errors/{fingerprint:path}", "", "error_group.html", error_group_page, forms=True),
    Page("/performance", "Performance", "performance.html", performance_page, ("endpoint",)),
    Page("/performance/endpoint", "", "endpoint.html", endpoint_page, ("endpoint",)),
)
"""Every page but the overview (``overview.OVERVIEW``, streamed); a capability that adds
pages adds entries here."""
