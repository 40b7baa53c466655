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
from asgimon.analytics.error_groups import PARAMS as ERROR_PARAMS
from asgimon.analytics.error_groups import errors
from asgimon.analytics.functions import functions
from asgimon.analytics.listing import MAX_LIMIT
from asgimon.analytics.listing import events as event_list
from asgimon.analytics.overview import dashboard, overview_row
from asgimon.analytics.performance import SORTS, performance
from asgimon.analytics.query import Query
from asgimon.analytics.ratelimits import ratelimits
from asgimon.events import EVENT_TYPES

from .alert_operations import ALERT_OPERATIONS
from .error_routes import GROUP_PATH
from .guard import INGEST_PATH, METRICS_PATH
from .metrics import MEDIA_TYPES
from .operation import Operation
from .ratelimit_routes import ADMIN_PATH
from .schemas import (
    EMPTY_BODY,
    GROUP_DETAIL,
    GROUP_STATE,
    IGNORE_BODY,
    INGEST_ANSWER,
    INGEST_BODY,
    OVERRIDE_BODY,
    OVERVIEW_ANSWER,
    RESPONSES,
    SUBJECT_BODY,
    Schema,
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One GET analytics endpoint of a project (or of all the caller's, for the overview)."""

    path: str
    compute: Callable[[Query], Awaitable[dict[str, Any]]]
    tables: tuple[str, ...]  # lists CSV can export; the first is the default
    params: dict[str, str]  # extra query parameters -> description
    summary: str
    response: Schema  # of its JSON answer, in the OpenAPI document
    per_project: bool = True  # False: ``compute`` makes one row per project the caller sees


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
            ERROR_PARAMS,
            "Error groups with their lifecycle, by type and severity, with their trend",
            RESPONSES["errors"],
        ),
        Endpoint(
            "/api/performance/{project_id}",
            performance,
            ("endpoints", "latencyTrend", "queries", "system"),
            {"sort": "order of endpoints: " + ", ".join(SORTS)},
            "API latency, error rate and Apdex per endpoint",
            RESPONSES["performance"],
        ),
        Endpoint(
            "/api/ratelimits/{project_id}",
            ratelimits,
            ("topKeys", "topEndpoints", "byRule", "denialTrend", "recentDenials"),
            {},
            "Requests the host's rate limit refused (and in shadow mode would have): "
            "by rule, key and endpoint, with their trend",
            RESPONSES["ratelimits"],
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


OVERVIEW = Endpoint(
    "/api/overview",
    overview_row,
    ("projects",),
    {},
    "Headline figures of every project the caller may see",
    OVERVIEW_ANSWER,
    per_project=False,
)


OBJECT: Schema = {"type": "object"}

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "/api/health",
        "GET",
        "health",
        "Recorder, storage, periodic jobs and cache state",
        {200: ("Healthy or degraded", OBJECT), 503: ("Storage is unavailable", OBJECT)},
        (401, 404, 429),
    ),
    Operation(
        "/api/summary",
        "GET",
        "summary",
        "The last 24 hours of every project the caller may see, from hour rollups",
        {200: ("OK", OBJECT)},
        (401, 404, 429, 503),
    ),
    Operation(
        INGEST_PATH,
        "POST",
        "ingest",
        "Ingest a batch of domain events (idempotent on event id)",
        {200: ("Stored: how many were new and how many already stored", INGEST_ANSWER)},
        (400, 401, 403, 404, 413, 415, 422, 429, 503),
        request=INGEST_BODY,
    ),
    # The actions first: a fingerprint may hold "/", so the detail's path also matches
    # theirs, and the router answers a wrong method from the first route that matches.
    *(
        Operation(
            f"{GROUP_PATH}/{action}",
            "POST",
            f"action:{action}",
            summary,
            {200: ("The group's lifecycle after the change", GROUP_STATE)},
            (401, 403, 404, 422, 429, 503),
            request=body,
            owner="errors",
        )
        for action, summary, body in (
            ("resolve", "Resolve an error group: its next occurrence is a regression", EMPTY_BODY),
            ("unresolve", "Unresolve an error group", EMPTY_BODY),
            (
                "ignore",
                "Ignore an error group forever, until a date, or for a number of occurrences",
                IGNORE_BODY,
            ),
        )
    ),
    Operation(
        GROUP_PATH,
        "GET",
        "detail",
        "One error group: lifecycle, trend, stack, occurrences, users, endpoints, deployments",
        {200: ("OK", GROUP_DETAIL)},
        (401, 403, 404, 422, 429, 503),
        owner="errors",
        params=("range", "start", "end", "format"),
    ),
    Operation(
        ADMIN_PATH + "/limits",
        "GET",
        "limits_config",
        "The host's rate limit as configured: default, burst, endpoints, exemptions (admins)",
        {200: ("OK", OBJECT)},
        (401, 403, 404, 422, 429),
        owner="ratelimits",
    ),
    Operation(
        ADMIN_PATH + "/usage",
        "GET",
        "usage",
        "Where a key stands against each of its limits now, spending nothing (admins)",
        {200: ("OK", OBJECT)},
        (401, 403, 404, 422, 429, 503),
        owner="ratelimits",
        params=("subject",),
    ),
    Operation(
        ADMIN_PATH + "/reset",
        "POST",
        "reset",
        "Forget what a key spent against every limit (admins)",
        {200: ("Reset", OBJECT)},
        (401, 403, 404, 422, 429, 503),
        request=SUBJECT_BODY,
        owner="ratelimits",
    ),
    Operation(
        ADMIN_PATH + "/overrides",
        "GET",
        "overrides",
        "The per-key limits in force, the same in every worker (admins)",
        {200: ("OK", OBJECT)},
        (401, 403, 404, 422, 429),
        owner="ratelimits",
    ),
    Operation(
        ADMIN_PATH + "/overrides",
        "PUT",
        "set_override",
        "Set a key's own limit in place of the default (admins)",
        {200: ("The override stored", OBJECT)},
        (401, 403, 404, 422, 429, 503),
        request=OVERRIDE_BODY,
        owner="ratelimits",
    ),
    Operation(
        ADMIN_PATH + "/overrides",
        "DELETE",
        "remove_override",
        "Remove a key's override: the default limit applies again (admins)",
        {200: ("Removed", OBJECT)},
        (401, 403, 404, 422, 429, 503),
        owner="ratelimits",
        params=("subject",),
    ),
    *ALERT_OPERATIONS,
    Operation(
        METRICS_PATH,
        "GET",
        "scrape",
        "Prometheus text (OpenMetrics if Accept asks for it) of today's figures per project",
        {200: ("The exposition, in the format Accept asks for", {"type": "string"})},
        (401, 403, 404, 422, 429, 501, 503),
        owner="metrics",
        query=(
            {
                "name": "project",
                "in": "query",
                "schema": {"type": "string", "minLength": 1, "maxLength": 128},
                "description": "Only this project's series (repeatable; default: all the "
                "caller may see)",
            },
        ),
        media_types=MEDIA_TYPES,
    ),
    Operation(
        "/api/openapi.json",
        "GET",
        "openapi",
        "This document",
        {200: ("OK", OBJECT)},
        (401, 404, 429),
    ),
)
