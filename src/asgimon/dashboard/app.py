"""The dashboard sub-application: the JSON API (more endpoints and the pages build on it)."""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from asgimon import histogram
from asgimon.analytics.deployments import deployments
from asgimon.analytics.functions import functions
from asgimon.analytics.ranges import BadQuery, TimeRange, parse_range
from asgimon.errors import StorageError
from asgimon.rollups import Rollup, combine
from asgimon.storage.base import Storage

from .access import LocalOnly, ingest_key
from .ingest import BadBatch, parse_body, to_events

if TYPE_CHECKING:
    from asgimon.monitor import Monitor

SUMMARY_WINDOW_S = 24 * 3600


def _latency(r: Rollup) -> dict[str, Any]:
    p50, p95, p99 = histogram.quantiles(r.hist, (0.5, 0.95, 0.99))
    return {
        "count": r.count,
        "errors": r.error_count,
        "errorRate": r.error_count / r.count if r.count else 0.0,
        "avgMs": r.avg,
        "p50Ms": p50,
        "p95Ms": p95,
        "p99Ms": p99,
    }


def _storage_unavailable(exc: StorageError) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": "storage_unavailable", "message": str(exc)[:300], "details": []}},
        status_code=503,
    )


async def project_summary(monitor: Monitor, project_id: str, now: float) -> dict[str, Any]:
    # Hour rollups: 25 rows per series for a day, where minutes would be 1,440.
    start = (now - SUMMARY_WINDOW_S) // 3600 * 3600
    minutes = await monitor.storage.rollups(
        project_id=project_id, resolution="hour", start=start, end=now + 3600
    )
    by_series: dict[str, list[Rollup]] = {}
    for r in minutes:
        by_series.setdefault(r.series, []).append(r)
    endpoints = []
    for series, rows in by_series.items():
        if series.startswith("api:"):
            method, _, endpoint = series[4:].partition(" ")
            endpoints.append({"method": method, "endpoint": endpoint, **_latency(combine(rows))})
    endpoints.sort(key=lambda e: -e["count"])
    api = combine(r for r in minutes if r.series.startswith("api:"))

    def total(prefix: str) -> dict[str, int]:
        rows = [r for r in minutes if r.series.startswith(prefix)]
        return {"count": sum(r.count for r in rows), "errors": sum(r.error_count for r in rows)}

    recent = await monitor.storage.events("deployment", project_id=project_id, limit=10)
    return {
        "projectId": project_id,
        "api": _latency(api),
        "endpoints": endpoints[:50],
        "deployments": total("deploy:"),
        "builds": total("build:"),
        "functions": total("fn:"),
        "domainEvents": total("domain:"),
        "errors": total("error:"),
        "recentDeployments": [
            {
                "deploymentId": e.deployment_id,  # type: ignore[attr-defined]
                "type": e.type,  # type: ignore[attr-defined]
                "status": e.status,  # type: ignore[attr-defined]
                "at": e.at.isoformat(),
            }
            for e in recent
        ],
    }


def create_dashboard(monitor: Monitor) -> ASGIApp:
    async def health(request: Request) -> JSONResponse:
        body = await monitor.health()
        return JSONResponse(body, status_code=200 if body["storage"].get("ok") else 503)

    async def summary(request: Request) -> JSONResponse:
        now = time.time()
        try:
            projects = await monitor.storage.projects() or [monitor.settings.project_id]
            data = [await project_summary(monitor, p, now) for p in projects]
        except StorageError as exc:
            return _storage_unavailable(exc)
        return JSONResponse({"windowSeconds": SUMMARY_WINDOW_S, "projects": data})

    app = Starlette(
        routes=[
            Route("/api/health", health, methods=["GET"]),
            Route("/api/summary", summary, methods=["GET"]),
            Route("/api/events", ingest_endpoint(monitor), methods=["POST"]),
            Route(
                "/api/deployments/{project_id}",
                analytics_endpoint(monitor, deployments),
                methods=["GET"],
            ),
            Route(
                "/api/functions/{project_id}",
                analytics_endpoint(monitor, functions),
                methods=["GET"],
            ),
        ],
        exception_handlers={HTTPException: _http_error},
    )
    return LocalOnly(app)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """404s and 405s in the API's own error shape, not Starlette's plain text."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse(
        {"error": {"code": code, "message": str(exc.detail), "details": []}},
        status_code=exc.status_code,
        headers=exc.headers,
    )


def _key_projects(monitor: Monitor, key: str | None) -> set[str] | None:
    """The projects an ingest key may write; None for a key that is not configured."""
    if key is None:
        return {"*"}  # a local request without a key (LocalOnly let it through)
    found = {
        project
        for project, known in monitor.settings.ingest_keys
        if hmac.compare_digest(known.encode(), key.encode())
    }
    return found or None


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BadBatch(413, "body_too_large", f"the body is over {limit} bytes", [])
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadBatch(413, "body_too_large", f"the body is over {limit} bytes", [])
        chunks.append(chunk)
    return b"".join(chunks)


def ingest_endpoint(monitor: Monitor) -> Any:
    settings = monitor.settings

    async def ingest(request: Request) -> JSONResponse:
        projects = _key_projects(monitor, ingest_key(request.scope))
        if projects is None:
            return JSONResponse(
                {"error": {"code": "invalid_key", "message": "unknown ingest key", "details": []}},
                status_code=401,
            )
        try:
            raw = await _read_body(request, settings.ingest_max_bytes)
            items = parse_body(raw, max_events=settings.ingest_max_events)
            events = to_events(
                items,
                allowed=lambda p: "*" in projects or p in projects,
                max_age_s=settings.metrics_retention_days * 86_400.0,
            )
        except BadBatch as bad:
            return JSONResponse(bad.body(), status_code=bad.status)
        try:
            result = await monitor.storage.write(events)
        except StorageError as exc:
            return _storage_unavailable(exc)
        return JSONResponse({"accepted": result.inserted, "duplicates": result.duplicates})

    return ingest


def _bad_query(exc: BadQuery) -> JSONResponse:
    detail = {"field": exc.field, "message": exc.message}
    return JSONResponse(
        {"error": {"code": "invalid_query", "message": str(exc), "details": [detail]}},
        status_code=422,
    )


def analytics_endpoint(
    monitor: Monitor, compute: Callable[[Storage, str, TimeRange], Awaitable[dict[str, Any]]]
) -> Any:
    """A GET endpoint for one project and a time range, answered by ``compute``."""

    async def endpoint(request: Request) -> JSONResponse:
        project_id = request.path_params["project_id"]
        if len(project_id) > 128 or not project_id.isprintable():
            return _bad_query(BadQuery("projectId", "must be 1 to 128 printable characters"))
        try:
            span = parse_range(request.query_params)
        except BadQuery as exc:
            return _bad_query(exc)
        try:
            return JSONResponse(await compute(monitor.storage, project_id, span))
        except StorageError as exc:
            return _storage_unavailable(exc)

    return endpoint
