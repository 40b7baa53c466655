"""The dashboard sub-application: the JSON API, the live stream and the pages.

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
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from asgimon.alerts.engine import AlertEngine
from asgimon.analytics.cache import CachedStorage, RollupCache
from asgimon.analytics.common import instant
from asgimon.analytics.query import Query
from asgimon.analytics.ranges import BadQuery, TimeRange, parse_range
from asgimon.analytics.summary import SUMMARY_WINDOW_S, project_summary
from asgimon.errors import StorageError
from asgimon.errortracking.tracker import ErrorTracker
from asgimon.events import Event
from asgimon.ratelimit import RateLimiter
from asgimon.ratelimit.host import HostLimits
from asgimon.redis_pools import RedisPools
from asgimon.settings import Settings
from asgimon.storage.base import Storage, WriteResult, storage_identity

from .alert_routes import AlertsApi
from .auth import Authenticator, AuthHook
from .endpoints import ENDPOINTS, OPERATIONS, OVERVIEW, Endpoint
from .error_routes import ErrorGroupsApi
from .export import csv_response, export_table
from .guard import Guard, principal_of
from .inbox import Inbox
from .ingest import BadBatch, parse_body, to_events
from .metrics import PrometheusMetrics
from .openapi import openapi_document
from .pages.app import Pages
from .pages.headers import PageHeaders
from .params import check_params, project_id_of
from .ratelimit_routes import RateLimitsApi
from .responses import (
    bad_query,
    error_response,
    forbidden,
    http_error,
    internal_error,
    storage_unavailable,
)
from .sentry_ingest import SentryIngest
from .stream import LiveStream
from .wire import to_wire


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

    @property
    def redis(self) -> RedisPools: ...

    @property
    def errors(self) -> ErrorTracker: ...

    @property
    def rate_limits(self) -> HostLimits: ...

    @property
    def alerts(self) -> AlertEngine | None: ...

    async def health(self) -> dict[str, Any]: ...


log = logging.getLogger("asgimon.dashboard")

STREAM_PATH = "/api/stream"
RANGE_PARAMS = frozenset({"range", "start", "end", "format", "table"})
MAX_OVERVIEW_PROJECTS = 500
OVERVIEW_CONCURRENCY = 2


class Api:
    """The endpoints, bound to one monitor, its cache and its rate limiter."""

    def __init__(self, monitor: Host) -> None:
        self.monitor = monitor
        s = monitor.settings
        self.cache = RollupCache(
            local_ttl=s.local_cache_ttl,
            scope=storage_identity(monitor.storage),
            redis_pool=monitor.redis.pool(s.redis_url) if s.redis_url else None,
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
                project_id = project_id_of(request)
                if not principal_of(request).can_see(project_id):
                    return forbidden(project_id)
                check_params(request.query_params, allowed)
                table = export_table(request, endpoint.tables)
                span = parse_range(request.query_params, now)
                body = to_wire(await endpoint.compute(self.query(request, project_id, span, now)))
            except BadQuery as exc:
                return bad_query(exc)
            except StorageError as exc:
                return storage_unavailable(exc)
            if table is not None:
                return csv_response(body[table], f"{project_id}-{table}.csv")
            return JSONResponse(body)

        return handle

    async def overview(self, request: Request) -> Response:
        now = time.time()
        principal = principal_of(request)
        try:
            check_params(request.query_params, RANGE_PARAMS | frozenset(OVERVIEW.params))
            table = export_table(request, OVERVIEW.tables)
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
                    return await OVERVIEW.compute(self.query(request, project, span, now))

            rows = list(await asyncio.gather(*(row(p) for p in projects[:MAX_OVERVIEW_PROJECTS])))
        except BadQuery as exc:
            return bad_query(exc)
        except StorageError as exc:
            return storage_unavailable(exc)
        if table is not None:
            return csv_response(to_wire(rows), "overview.csv")
        return JSONResponse(
            to_wire(
                {
                    "start": instant(span.start),
                    "end": instant(span.end),
                    "resolution": span.resolution,
                    "total_projects": len(projects),
                    "projects": rows,
                }
            )
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
            data = [await project_summary(self.monitor.storage, p, now) for p in visible]
        except StorageError as exc:
            return storage_unavailable(exc)
        return JSONResponse(to_wire({"window_seconds": SUMMARY_WINDOW_S, "projects": data}))

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
            return storage_unavailable(exc)
        return JSONResponse({"accepted": result.inserted, "duplicates": result.duplicates})

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document(ENDPOINTS, server=request.scope.get("root_path", "")))


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


class DashboardApp:
    """The mounted ASGI app, with what it holds open (Redis clients) to close at shutdown."""

    def __init__(self, monitor: Host, auth: AuthHook | None = None) -> None:
        s = monitor.settings
        self.api = Api(monitor)
        self.throttle = (
            RateLimiter(
                s.api_rate_limit,
                redis_url=s.redis_url,
                redis_pool=monitor.redis.pool(s.redis_url) if s.redis_url else None,
                key_prefix=s.redis_key_prefix,
            )
            if s.api_rate_limit
            else None
        )
        api = self.api
        authn = Authenticator(s, auth)
        # In-app notifications, for the pages' header and the stream, while alerting is on.
        self.inbox = Inbox(monitor.storage) if monitor.alerts is not None else None
        self.stream = LiveStream(monitor.storage, inbox=self.inbox)
        self.pages = Pages(
            s,
            monitor.storage,
            api.query,
            authn,
            monitor.rate_limits,
            alerts=monitor.alerts,
            inbox=self.inbox,
        )
        routes: list[BaseRoute] = [Route(OVERVIEW.path, api.overview, methods=["GET"])]
        self.error_groups = ErrorGroupsApi(monitor.storage, api.query)
        self.rate_limit_admin = RateLimitsApi(monitor.rate_limits)
        self.alerts = AlertsApi(monitor.alerts)
        self.metrics = PrometheusMetrics(monitor.storage, monitor.health)
        owners = {
            "api": api,
            "errors": self.error_groups,
            "ratelimits": self.rate_limit_admin,
            "alerts": self.alerts,
            "metrics": self.metrics,
        }
        # One route per path, whatever its methods: a wrong method is a 405 whose Allow
        # header lists all of them.
        by_path: dict[str, dict[str, Callable[[Request], Awaitable[Response]]]] = {}
        for op in OPERATIONS:
            owner = owners[op.owner]
            kind, _, name = op.handler.partition(":")
            handler = owner.action(name) if name else getattr(owner, kind)  # type: ignore[attr-defined]
            by_path.setdefault(op.route, {})[op.method] = handler
        for path, handlers in by_path.items():
            routes.append(Route(path, _by_method(handlers), methods=list(handlers)))
        routes += [Route(e.path, api.analytics(e), methods=["GET"]) for e in ENDPOINTS.values()]
        routes.append(Route(STREAM_PATH, self.stream.endpoint, methods=["GET"]))
        self.sentry = SentryIngest(s, monitor.errors.rules, monitor.recorder)
        routes += [
            Route("/api/{sentry_id:int}/envelope/", self.sentry.envelope, methods=["POST"]),
            Route("/api/{sentry_id:int}/store/", self.sentry.store, methods=["POST"]),
        ]
        routes += self.pages.routes()
        self.routes = routes
        inner = Starlette(
            routes=routes,
            exception_handlers={HTTPException: http_error, Exception: internal_error},
        )
        self.app = PageHeaders(Guard(inner, authn, self.throttle))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    async def aclose(self) -> None:
        self.stream.close()
        try:
            await self.api.cache.close()
        finally:
            if self.throttle is not None:
                await self.throttle.aclose()


def create_dashboard(monitor: Host, auth: AuthHook | None = None) -> DashboardApp:
    return DashboardApp(monitor, auth)


def _by_method(
    handlers: dict[str, Callable[[Request], Awaitable[Response]]],
) -> Callable[[Request], Awaitable[Response]]:
    if len(handlers) == 1:
        return next(iter(handlers.values()))

    async def dispatch(request: Request) -> Response:
        return await handlers[request.method if request.method != "HEAD" else "GET"](request)

    return dispatch
