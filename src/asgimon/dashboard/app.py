"""The dashboard sub-application: the JSON API (the pages build on it).

Every analytics endpoint is one ``compute(query)`` function registered in :data:`ENDPOINTS`,
which also lists its extra parameters and its tables for CSV export; the OpenAPI document
and the tenant-isolation tests are generated from the same table.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from asgimon._validate import project_id_problem
from asgimon.analytics.builds import is_build_start
from asgimon.analytics.cache import CachedStorage, RollupCache
from asgimon.analytics.common import iso
from asgimon.analytics.overview import overview_row
from asgimon.analytics.query import Query
from asgimon.analytics.ranges import BadQuery, TimeRange, parse_range
from asgimon.errors import StorageError
from asgimon.events import Event
from asgimon.ratelimit import RateLimiter, Verdict
from asgimon.rollups import Rollup, combine
from asgimon.settings import Settings
from asgimon.storage.base import Storage, WriteResult, storage_identity

from .access import cross_site, host_count, local_request
from .auth import Authenticator, AuthError, AuthHook, Principal, presented_token
from .endpoints import ENDPOINTS, Endpoint
from .export import csv_response
from .ingest import BadBatch, parse_body, to_events
from .openapi import openapi_document


class Writer(Protocol):
    async def write_through(self, events: Sequence[Event]) -> WriteResult: ...


class Host(Protocol):
    """What the sub-application uses of its owner (the Host)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def storage(self) -> Storage: ...

    @property
    def recorder(self) -> Writer: ...

    async def health(self) -> dict[str, Any]: ...


log = logging.getLogger("asgimon.dashboard")

SUMMARY_WINDOW_S = 24 * 3600
RANGE_PARAMS = frozenset({"range", "start", "end", "format", "table"})
MAX_OVERVIEW_PROJECTS = 500
OVERVIEW_CONCURRENCY = 2
PRINCIPAL = "asgimon.principal"
LOCAL = Principal("local", admin=True)
"""Who a loopback client is when no auth is configured."""


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "details": details or []}},
        status_code=status,
        headers=headers,
    )


def _storage_unavailable(exc: StorageError) -> JSONResponse:
    # The driver's words (hosts, ports) stay in the server log.
    log.warning("asgimon: the analytics API could not read storage: %s", exc)
    return error_response(503, "storage_unavailable", "storage is unavailable; retry later")


def _bad_query(exc: BadQuery) -> JSONResponse:
    return error_response(
        422, "invalid_query", str(exc), [{"field": exc.field, "message": exc.message}]
    )


def principal_of(request: Request) -> Principal:
    principal = request.scope.get(PRINCIPAL)
    assert isinstance(principal, Principal), "the guard sets the principal"
    return principal


def _forbidden(project_id: str) -> JSONResponse:
    return error_response(
        403,
        "forbidden_project",
        "this principal may not see the project",
        [{"field": "projectId", "message": f"not among the caller's projects: {project_id!r}"}],
    )


def _check_params(request: Request, allowed: frozenset[str]) -> None:
    for name in request.query_params:
        if name not in allowed:
            raise BadQuery(name, "is not a parameter of this endpoint")
    for name in allowed:
        if len(request.query_params.getlist(name)) > 1:
            raise BadQuery(name, "give it once")


def _export_table(request: Request, tables: tuple[str, ...]) -> str | None:
    """The table to answer as CSV, or None for JSON."""
    fmt = request.query_params.get("format", "json")
    if fmt not in ("json", "csv"):
        raise BadQuery("format", "must be json or csv")
    table = request.query_params.get("table")
    if table is not None and table not in tables:
        raise BadQuery("table", "must be one of " + ", ".join(tables))
    if fmt == "json":
        if table is not None:
            raise BadQuery("table", "only with format=csv")
        return None
    return table or tables[0]


def _project_id(request: Request) -> str:
    project_id: str = request.path_params["project_id"]
    problem = project_id_problem(project_id)
    if problem is not None:
        raise BadQuery("projectId", problem)
    return project_id


class Api:
    """The endpoints, bound to one monitor, its cache and its rate limiter."""

    def __init__(self, monitor: Host) -> None:
        self.monitor = monitor
        s = monitor.settings
        self.cache = RollupCache(
            local_ttl=s.local_cache_ttl,
            scope=storage_identity(monitor.storage),
            redis_url=s.redis_url,
            redis_ttl=s.cache_ttl,
            key_prefix=s.redis_key_prefix,
        )
        self.client_disconnects = 0

    def query(self, request: Request, project_id: str, span: TimeRange, now: float) -> Query:
        return Query(
            storage=CachedStorage(self.monitor.storage, self.cache, now),
            settings=self.monitor.settings,
            project_id=project_id,
            span=span,
            now=now,
            params=request.query_params,
        )

    def analytics(self, endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
        allowed = RANGE_PARAMS | frozenset(endpoint.params)

        async def handle(request: Request) -> Response:
            now = time.time()
            try:
                project_id = _project_id(request)
                if not principal_of(request).can_see(project_id):
                    return _forbidden(project_id)
                _check_params(request, allowed)
                table = _export_table(request, endpoint.tables)
                span = parse_range(request.query_params, now)
                body = await endpoint.compute(self.query(request, project_id, span, now))
            except BadQuery as exc:
                return _bad_query(exc)
            except StorageError as exc:
                return _storage_unavailable(exc)
            if table is not None:
                return csv_response(body[table], f"{project_id}-{table}.csv")
            return JSONResponse(body)

        return handle

    async def overview(self, request: Request) -> Response:
        now = time.time()
        principal = principal_of(request)
        try:
            _check_params(request, RANGE_PARAMS)
            table = _export_table(request, ("projects",))
            span = parse_range(request.query_params, now)
            if principal.admin:
                projects = await self.monitor.storage.projects()
                projects = sorted(set(projects) | principal.projects) or [
                    self.monitor.settings.project_id
                ]
            else:
                projects = sorted(principal.projects)
            # A few projects at a time: each is a round trip, and the pool has a few
            # connections (the writer's among them on PostgreSQL).
            gate = asyncio.Semaphore(OVERVIEW_CONCURRENCY)

            async def row(project: str) -> dict[str, Any]:
                async with gate:
                    return await overview_row(self.query(request, project, span, now))

            rows = list(await asyncio.gather(*(row(p) for p in projects[:MAX_OVERVIEW_PROJECTS])))
        except BadQuery as exc:
            return _bad_query(exc)
        except StorageError as exc:
            return _storage_unavailable(exc)
        if table is not None:
            return csv_response(rows, "overview.csv")
        return JSONResponse(
            {
                "start": iso(span.start),
                "end": iso(span.end),
                "resolution": span.resolution,
                "totalProjects": len(projects),
                "projects": rows,
            }
        )

    async def health(self, request: Request) -> Response:
        body = await self.monitor.health()
        status = 200 if body["storage"].get("ok") else 503
        if not principal_of(request).admin:
            # The recorder, jobs and errors are the operator's, not any one tenant's.
            return JSONResponse({"status": body["status"]}, status_code=status)
        body["cache"] = self.cache.stats()
        body["ingest"] = {"clientDisconnects": self.client_disconnects}
        return JSONResponse(body, status_code=status)

    async def summary(self, request: Request) -> Response:
        now = time.time()
        principal = principal_of(request)
        try:
            projects = await self.monitor.storage.projects() or [self.monitor.settings.project_id]
            visible = [p for p in projects if principal.can_see(p)]
            data = [await project_summary(self.monitor, p, now) for p in visible]
        except StorageError as exc:
            return _storage_unavailable(exc)
        return JSONResponse({"windowSeconds": SUMMARY_WINDOW_S, "projects": data})

    async def ingest(self, request: Request) -> Response:
        settings = self.monitor.settings
        principal = principal_of(request)
        media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != "application/json":
            # Also what makes a cross-site form or no-cors fetch need a CORS preflight.
            detail = {"field": "Content-Type", "message": "must be application/json"}
            return error_response(415, "unsupported_media_type", detail["message"], [detail])
        encodings = [e.strip().lower() for e in request.headers.getlist("content-encoding")]
        if any(e not in ("", "identity") for e in encodings):
            # Stored as plain text, a compressed body would be noise under a 2xx.
            detail = {"field": "Content-Encoding", "message": "is not decoded: send plain JSON"}
            return error_response(415, "unsupported_media_type", detail["message"], [detail])
        try:
            raw = await _read_body(request, settings.ingest_max_bytes)
            items = parse_body(raw, max_events=settings.ingest_max_events)
            events = to_events(
                items,
                allowed=principal.can_see,
                max_age_s=settings.metrics_retention_days * 86_400.0,
            )
        except BadBatch as bad:
            return JSONResponse(bad.body(), status_code=bad.status)
        except ClientDisconnect:
            # Nothing to answer and nothing to store; one line, not a traceback.
            self.client_disconnects += 1
            log.info("asgimon: a client went away before its events body was complete")
            return Response(status_code=400)
        try:
            result = await self.monitor.recorder.write_through(events)
        except StorageError as exc:
            return _storage_unavailable(exc)
        return JSONResponse({"accepted": result.inserted, "duplicates": result.duplicates})

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document(ENDPOINTS, server=request.scope.get("root_path", "")))


def _latency(r: Rollup) -> dict[str, Any]:
    p50, p95, p99 = r.quantiles((0.5, 0.95, 0.99))
    return {
        "count": r.count,
        "errors": r.error_count,
        "errorRate": r.error_count / r.count if r.count else 0.0,
        "avgMs": r.avg,
        "p50Ms": p50,
        "p95Ms": p95,
        "p99Ms": p99,
    }


async def project_summary(monitor: Host, project_id: str, now: float) -> dict[str, Any]:
    # Hour rollups: 25 rows per series for a day, where minutes would be 1,440.
    start = (now - SUMMARY_WINDOW_S) // 3600 * 3600
    rows = await monitor.storage.rollups(
        project_id=project_id, resolution="hour", start=start, end=now + 3600
    )
    by_series: dict[str, list[Rollup]] = {}
    for r in rows:
        by_series.setdefault(r.series, []).append(r)
    endpoints = []
    for series, group in by_series.items():
        if series.startswith("api:"):
            method, _, endpoint = series[4:].partition(" ")
            endpoints.append({"method": method, "endpoint": endpoint, **_latency(combine(group))})
    endpoints.sort(key=lambda e: -e["count"])
    api = combine(r for r in rows if r.series.startswith("api:"))

    def total(prefix: str) -> dict[str, int]:
        found = [r for r in rows if r.series.startswith(prefix)]
        return {"count": sum(r.count for r in found), "errors": sum(r.error_count for r in found)}

    recent = await monitor.storage.events("deployment", project_id=project_id, limit=10)
    return {
        "projectId": project_id,
        "api": _latency(api),
        "endpoints": endpoints[:50],
        "deployments": total("deploy:"),
        "builds": {
            "count": sum(r.count for r in rows if is_build_start(r.series)),
            "errors": sum(r.error_count for r in rows if r.series.startswith("build:")),
        },
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


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        raise BadBatch(413, "body_too_large", f"the body is over {limit} bytes", [])
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadBatch(413, "body_too_large", f"the body is over {limit} bytes", [])
        chunks.append(chunk)
    return b"".join(chunks)


async def _http_error(request: Request, exc: Exception) -> Response:
    """404s and 405s in the API's own error shape, not Starlette's plain text."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, code, str(exc.detail), headers=headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("asgimon: the analytics API failed on %s", request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "the analytics API failed; see the server log")


INGEST_PATH = "/api/events"


def _client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "-"


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class Guard:
    """Decides who is asking, refuses strangers, and applies the API's rate limit.

    With no auth configured (no JWT key, no hook), only loopback clients without proxy
    headers are answered, as an admin, and everyone else gets a 404 that does not tell them
    anything is mounted here; ingest keys still work for ``POST /api/events``. With auth
    configured, every request needs credentials, loopback included: behind a reverse proxy
    every visitor is loopback.
    """

    def __init__(self, app: ASGIApp, authn: Authenticator, throttle: RateLimiter | None) -> None:
        self.app = app
        self.authn = authn
        self.throttle = throttle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if host_count(scope) > 1:
            # Which one a proxy, the guard and the host app each read is anyone's guess.
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            detail = {"field": "Host", "message": "must be sent once"}
            await error_response(400, "bad_request", "more than one Host header", [detail])(
                scope, receive, send
            )
            return
        failures_key = "refused:" + _client_address(scope)
        if self.throttle is not None and await self.throttle.exhausted(failures_key):
            # An address that keeps failing to authenticate waits before the next try
            # reaches a JWT check or the host's hook.
            await error_response(
                429, "rate_limited", "too many refused requests from this address"
            )(scope, receive, send)
            return
        refusal, principal = await self._principal(scope)
        if principal is None:
            if self.throttle is not None and refusal is not None and refusal.status_code == 401:
                await self.throttle.check(failures_key)
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            else:
                assert refusal is not None
                await refusal(scope, receive, send)
            return
        ingest = scope["type"] == "http" and _route_path(scope) == INGEST_PATH
        if principal.ingest_only and not (ingest and scope.get("method") == "POST"):
            # As to a stranger: the key opens ingestion and nothing else.
            await error_response(404, "not_found", "Not Found")(scope, receive, send)
            return
        verdict: Verdict | None = None
        if self.throttle is not None and scope["type"] == "http":
            verdict = await self.throttle.check(self._limit_key(scope, principal))
            if verdict is not None and not verdict.allowed:
                await error_response(
                    429,
                    "rate_limited",
                    "too many requests to the analytics API",
                    headers=verdict.headers(),
                )(scope, receive, send)
                return
        scope = {**scope, PRINCIPAL: principal}
        if verdict is None:
            await self.app(scope, receive, send)
            return
        extra = [(k.lower().encode(), v.encode()) for k, v in verdict.headers().items()]

        async def send_with_limits(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_limits)

    async def _principal(self, scope: Scope) -> tuple[Response | None, Principal | None]:
        token = presented_token(scope)
        if token is not None:
            keyed = self.authn.ingest_principal(token)
            if keyed is not None:
                return None, keyed
        if self.authn.configured:
            try:
                principal = await self.authn.principal(Request(scope), token)
            except AuthError as exc:
                return self._unauthorized("invalid_token", str(exc)), None
            except Exception:  # the host's hook (or a key) failed: refuse, without a 500
                log.exception("asgimon: authentication failed unexpectedly")
                message = "authentication failed; see the server log"
                return error_response(503, "auth_unavailable", message), None
            if principal is None:
                return self._unauthorized("unauthorized", "credentials are required"), None
            return None, principal
        if token is not None and _route_path(scope) == INGEST_PATH:
            return self._unauthorized("invalid_key", "unknown ingest key"), None
        if local_request(scope) and not cross_site(scope):
            return None, LOCAL
        return error_response(404, "not_found", "Not Found"), None

    @staticmethod
    def _unauthorized(code: str, message: str) -> Response:
        return error_response(401, code, message, headers={"WWW-Authenticate": "Bearer"})

    @staticmethod
    def _limit_key(scope: Scope, principal: Principal) -> str:
        if principal is LOCAL:
            return "addr:" + _client_address(scope)
        if principal.ingest_only:
            return "key:" + ",".join(sorted(principal.projects))
        return "sub:" + principal.subject


class DashboardApp:
    """The mounted ASGI app, with what it holds open (Redis clients) to close at shutdown."""

    def __init__(self, monitor: Host, auth: AuthHook | None = None) -> None:
        s = monitor.settings
        self.api = Api(monitor)
        self.throttle = (
            RateLimiter(s.api_rate_limit, redis_url=s.redis_url, key_prefix=s.redis_key_prefix)
            if s.api_rate_limit
            else None
        )
        api = self.api
        routes = [
            Route("/api/health", api.health, methods=["GET"]),
            Route("/api/summary", api.summary, methods=["GET"]),
            Route("/api/overview", api.overview, methods=["GET"]),
            Route("/api/openapi.json", api.openapi, methods=["GET"]),
            Route(INGEST_PATH, api.ingest, methods=["POST"]),
        ]
        routes += [Route(e.path, api.analytics(e), methods=["GET"]) for e in ENDPOINTS.values()]
        self.routes = routes
        inner = Starlette(
            routes=routes,
            exception_handlers={HTTPException: _http_error, Exception: _internal_error},
        )
        self.app = Guard(inner, Authenticator(s, auth), self.throttle)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    async def aclose(self) -> None:
        try:
            await self.api.cache.close()
        finally:
            if self.throttle is not None:
                await self.throttle.aclose()


def create_dashboard(monitor: Host, auth: AuthHook | None = None) -> DashboardApp:
    return DashboardApp(monitor, auth)
