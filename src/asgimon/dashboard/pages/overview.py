"""The overview, streamed: the header, the controls and the title go out before any figure
is read, then the live figures, the key figures, the charts, the two tables and the other
projects' headlines, each as soon as its reads are done.

Its reads start together, before the first byte; each panel waits for the ones it shows
only, so the first screen paints on its own while the five projects' summary, the slowest
and the lowest on the page, is still being read."""

from __future__ import annotations

import asyncio
from typing import Any

from asgimon.analytics.functions import invocation_trend
from asgimon.analytics.overview import dashboard, overview_row

from .charts import Chart, Line, time_chart
from .context import PageContext
from .formats import pct
from .streamed import Panel
from .views import Figures, MakeQuery, Page, deploy_markers, live_now, trend_chart

SUMMARY_PROJECTS = 5

PANELS = (
    Panel("_live.html", ("live",), "Live figures"),
    Panel("_overview_cards.html", ("f",), "Key figures"),
    Panel("_overview_charts.html", ("charts",), "Charts"),
    Panel("_overview_tables.html", ("f",), "Top errors and recent deployments"),
    Panel("_overview_projects.html", ("projects_summary",), "Your projects"),
)


async def overview(ctx: PageContext, query: MakeQuery) -> Figures:
    """The overview's reads, started and not awaited: the panels await them. Every task
    started is returned, so that a client leaving cancels them all."""

    f = asyncio.create_task(dashboard(query(ctx, ctx.project_id)))
    markers = asyncio.create_task(deploy_markers(ctx, query))
    fn_trend = asyncio.create_task(invocation_trend(query(ctx, ctx.project_id)))
    return {
        "live": asyncio.create_task(live_now(ctx, query)),
        "f": f,
        "charts": asyncio.create_task(_charts(f, markers, fn_trend)),
        "projects_summary": asyncio.create_task(_summary(ctx, query)),
        "markers": markers,
        "invocation_trend": fn_trend,
    }


async def _charts(
    f: asyncio.Task[Figures], markers: asyncio.Task[Any], fn_trend: asyncio.Task[Any]
) -> list[Chart]:
    figures, marks, fns = await asyncio.gather(f, markers, fn_trend)
    times = [p["time"] for p in fns]
    return [
        trend_chart(
            "Deployments",
            figures["deployment_trend"],
            {"deployments": "count", "failed": "failures"},
            marks,
            bars=True,
        ),
        trend_chart("Function invocations", fns, {"invocations": "invocations"}, marks, bars=True),
        time_chart(
            "Function error rate",
            times,
            [Line("error rate", [_rate(p["errors"], p["invocations"]) for p in fns])],
            fmt=pct,
            markers=marks,
        ),
    ]


async def _summary(ctx: PageContext, query: MakeQuery) -> list[Figures]:
    """This project's headline beside four more the caller may see; none when it is alone."""
    others = [p for p in ctx.projects if p != ctx.project_id][: SUMMARY_PROJECTS - 1]
    if not others:
        return []
    return list(
        await asyncio.gather(*(overview_row(query(ctx, p)) for p in [ctx.project_id, *others]))
    )


def _rate(part: float, whole: float) -> float | None:
    return part / whole if whole else None


OVERVIEW = Page("/", "Overview", "overview.html", overview, live=True, panels=PANELS)
