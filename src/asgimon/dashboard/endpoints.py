"""The analytics endpoints as data: path, computation, extra parameters, CSV tables.

The API's routes, the OpenAPI document and the tenant-isolation tests are all generated
from :data:`ENDPOINTS`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from asgimon.analytics.builds import builds
from asgimon.analytics.deployments import deployments
from asgimon.analytics.error_groups import errors
from asgimon.analytics.functions import functions
from asgimon.analytics.listing import MAX_LIMIT
from asgimon.analytics.listing import events as event_list
from asgimon.analytics.overview import dashboard
from asgimon.analytics.performance import SORTS, performance
from asgimon.analytics.query import Query
from asgimon.events import EVENT_TYPES

from .schemas import RESPONSES, Schema


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One GET analytics endpoint of a project (or of all the caller's, for the overview)."""

    path: str
    compute: Callable[[Query], Awaitable[dict[str, Any]]]
    tables: tuple[str, ...]  # lists CSV can export; the first is the default
    params: dict[str, str]  # extra query parameters -> description
    summary: str
    response: Schema  # of its JSON answer, in the OpenAPI document


ENDPOINTS: dict[str, Endpoint] = {
    e.path.split("/")[2]: e
    for e in (
        Endpoint(
            "/api/dashboard/{project_id}",
            dashboard,
            ("recentDeployments", "topErrors", "deploymentTrend"),
            {},
            "Headline figures: deployments, builds, functions, errors, API latency",
            RESPONSES["dashboard"],
        ),
        Endpoint(
            "/api/deployments/{project_id}",
            deployments,
            (
                "deployments",
                "deploymentsByDate",
                "deploymentsByStatus",
                "frameworkDistribution",
                "deploymentTrend",
            ),
            {},
            "Deployment rates, durations, frameworks; before/after impact of each deployment",
            RESPONSES["deployments"],
        ),
        Endpoint(
            "/api/functions/{project_id}",
            functions,
            (
                "functions",
                "invocationsByFunction",
                "errorsByFunction",
                "executionTimeDistribution",
                "invocationTrend",
            ),
            {},
            "Function invocations, execution times and errors",
            RESPONSES["functions"],
        ),
        Endpoint(
            "/api/builds/{project_id}",
            builds,
            ("builds", "phaseDurations", "frameworkUsage", "durationTrend"),
            {},
            "Build outcomes, durations per phase and framework usage",
            RESPONSES["builds"],
        ),
        Endpoint(
            "/api/errors/{project_id}",
            errors,
            ("groups", "errorsByType", "errorsBySeverity", "recentErrors", "errorTrend"),
            {},
            "Errors by group, type and severity, with their trend",
            RESPONSES["errors"],
        ),
        Endpoint(
            "/api/performance/{project_id}",
            performance,
            ("endpoints", "latencyTrend"),
            {"sort": "order of endpoints: " + ", ".join(SORTS)},
            "API latency, error rate and Apdex per endpoint",
            RESPONSES["performance"],
        ),
        Endpoint(
            "/api/events/{project_id}",
            event_list,
            ("events",),
            {
                "kind": "event kind: " + ", ".join(EVENT_TYPES),
                "limit": f"at most this many events, 1 to {MAX_LIMIT} (default 100)",
            },
            "Raw events of one kind, newest first",
            RESPONSES["events"],
        ),
    )
}
