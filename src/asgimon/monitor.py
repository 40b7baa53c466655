"""The Monitor: one object that owns settings, storage and recorder, and hands out the rest."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any

from starlette.types import ASGIApp, Scope

from . import retention
from ._heap import freeze_startup_heap
from ._validate import to_epoch
from .capture import error_event
from .dashboard import create_dashboard
from .dashboard.auth import AuthHook
from .dashboard.mount import Mounted
from .errors import InvalidEventError
from .events import BuildEvent, DeploymentEvent, DomainEvent, ErrorEvent, Event, FunctionInvocation
from .lag import LagProbe
from .middleware import ApiCallBuilder, AsgimonMiddleware, route_template
from .middleware.host import InFlight, Queue, RouteTable
from .parts import Part, Parts
from .pipeline.recorder import Recorder, RecorderStats
from .pipeline.scheduler import Scheduler
from .pipeline.sinks import DELIVERY_TIMEOUT_S, MAX_PENDING_EVENTS, Sink, Subscription
from .sampling import RawSampling
from .settings import Settings
from .storage import Storage, storage_from_url
from .storage.schemes import backend_of
from .tracking import Tracker, build_phase_tracker, function_tracker

COMPACT_SETTLE_S = 120.0
log = logging.getLogger("asgimon")

Timestamp = datetime | float | int | None
CLOCK_JUMP_S = 300.0
HEALTH_TIMEOUT_S = 2.0
DEGRADED_FOR_S = 60.0


def _storage_options(settings: Settings) -> dict[str, Any]:
    backend = backend_of(settings.storage_url)
    return {} if backend is None else backend.options(settings)


def _consume(task: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned task's outcome so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


ScopeResolver = Callable[[Scope], str | None]


class Monitor:
    """Monitoring for one ASGI app.

    >>> monitor = Monitor.from_env()                     # storage from ANALYTICS_STORAGE_URL
    >>> app = monitor.wrap(app)                          # doctest: +SKIP
    >>> await monitor.record_deployment_event("dep-1", "started")   # doctest: +SKIP

    ``user_resolver(scope)`` gives the user id of a request (default: ``scope["user"]``),
    ``project_resolver(scope)`` its project (default: the ``project_id`` setting), and
    ``route_resolver(scope)`` its route template for frameworks whose router does not leave
    ``scope["route"]`` behind. All three run at the end of each request, so keep them cheap.
    ``auth(request)`` decides who may read the analytics API: it returns a
    :class:`~asgimon.dashboard.auth.Principal` or None (JWTs are the other way in, from
    ``ANALYTICS_JWT_SECRET`` or ``ANALYTICS_JWT_PUBLIC_KEY``).
    """

    middleware_class = AsgimonMiddleware

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        storage: Storage | None = None,
        user_resolver: ScopeResolver | None = None,
        project_resolver: ScopeResolver | None = None,
        route_resolver: ScopeResolver | None = None,
        auth: AuthHook | None = None,
        **overrides: Any,
    ) -> None:
        if settings is None:
            settings = Settings(**overrides)
        elif overrides:
            settings = settings.replace(**overrides)
        self.settings = settings
        if storage is None:
            storage = storage_from_url(settings.storage_url, **_storage_options(settings))
        self.storage = storage
        self.user_resolver = user_resolver
        self.project_resolver = project_resolver
        self.route_resolver = route_resolver
        self.auth = auth
        self.api_calls = ApiCallBuilder(settings.max_endpoints, settings.project_id)
        self.recorder = Recorder(
            storage,
            max_events=settings.queue_max_events,
            max_bytes=settings.queue_max_bytes,
            batch_size=settings.batch_size,
            flush_interval=settings.flush_interval,
            shutdown_timeout=settings.shutdown_timeout,
            retry_backoff_max=settings.retry_backoff_max,
            retry_deadline=settings.retry_deadline,
            convert=self.api_calls,
            sampling=RawSampling(settings.api_call_sample_rate, settings.slow_request_ms),
        )
        self.scheduler = Scheduler(storage)
        self.scheduler.every("purge", settings.purge_interval, self.purge)
        self.scheduler.every("compact", settings.compact_interval, self.compact)
        self.lag = LagProbe()
        self.dashboard = create_dashboard(self, auth)
        """The sub-application mounted at ``mount_path``: the JSON API (and pages)."""
        self.parts = Parts(self._parts())
        self._last_purge: tuple[float, float] | None = None
        self.requests = InFlight()
        """Requests inside the app now, counted by the middleware."""
        self.started = False
        self.storage_error: str | None = None
        self._start_task: asyncio.Task[None] | None = None
        self._abandoned: set[asyncio.Future[Any]] = set()

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        storage: Storage | None = None,
        **overrides: Any,
    ) -> Monitor:
        """Settings from ``environ`` (default ``os.environ``), then ``overrides``."""
        resolvers = {
            k: overrides.pop(k)
            for k in ("user_resolver", "project_resolver", "route_resolver", "auth")
            if k in overrides
        }
        return cls(Settings.from_env(environ, **overrides), storage=storage, **resolvers)

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Connect storage and start the flush task. A storage that is down is retried later."""
        if self.started:
            return
        self.started = True
        await self.parts.start()

    def _parts(self) -> list[Part]:
        """What runs while the monitor does, in start order; they close in reverse."""
        recorder, scheduler = self.recorder, self.scheduler

        async def close_scheduler(left: float) -> None:
            await scheduler.stop(timeout=min(0.5, self.settings.shutdown_timeout / 4))

        async def close_recorder(left: float) -> None:
            # A margin for the parts closed after it, inside the same budget.
            await recorder.stop(timeout=max(0.0, left - 0.25))

        async def close_sinks(left: float) -> None:
            # What was stored before the end still reaches the subscribers, briefly.
            await recorder.sinks.aclose(min(0.5, left))

        return [
            Part("storage", lambda left: self.storage.close(), self._start_storage),
            Part("the dashboard's clients", lambda left: self.dashboard.aclose()),
            Part("subscribers", close_sinks, recorder.sinks.start),
            Part("recorder", close_recorder, recorder.start, self_bounded=True),
            Part("scheduler", close_scheduler, scheduler.start, self_bounded=True),
            Part("lag probe", lambda left: self.lag.aclose(), self._start_lag_probe, True),
        ]

    async def _start_storage(self) -> None:
        try:
            await self.storage.start()
            self.storage_error = None
        except Exception as exc:  # a store that is down must not stop the host from starting
            self.storage_error = str(exc)[:500]
            log.error("asgimon: storage failed to start, will retry on each flush: %s", exc)

    async def _start_lag_probe(self) -> None:
        if self.settings.gc_freeze:
            freeze_startup_heap()  # before the probe: its one collection is start-up, not load
        await self.lag.start()

    async def stop(self) -> None:
        """Flush what is queued (within ``shutdown_timeout``) and close storage."""
        if self._start_task is not None and not self._start_task.done():
            await self._start_task
        self._start_task = None
        if not self.started:
            return
        self.started = False
        # All of it within shutdown_timeout: a store that hangs must not hold the host's
        # shutdown hostage.
        await self.parts.aclose(budget=self.settings.shutdown_timeout)

    def start_soon(self) -> None:
        """Start in the background: for servers that send no lifespan events."""
        if self._start_task is None:
            self._start_task = asyncio.get_running_loop().create_task(self.start())

    async def __aenter__(self) -> Monitor:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- the app side ------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    @property
    def queue(self) -> Queue:
        return self.recorder

    @property
    def route_table(self) -> RouteTable:
        return self.api_calls

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """The app with the middleware applied and the dashboard at ``mount_path``."""
        return AsgimonMiddleware(
            Mounted(app, self.settings.mount_path, self.dashboard), monitor=self
        )

    def excluded_paths(self) -> tuple[frozenset[str], tuple[str, ...]]:
        """Paths never recorded: exact ones, and prefixes (the dashboard's mount included)."""
        exact = {p for p in self.settings.exclude_paths if not p.endswith("*")}
        prefixes = {p[:-1] for p in self.settings.exclude_paths if p.endswith("*")}
        mount = self.settings.mount_path
        exact.add(mount)
        prefixes.add(mount + "/")
        return frozenset(exact), tuple(sorted(prefixes))

    # -- recording ---------------------------------------------------------------------

    def subscribe(
        self,
        sink: Sink,
        *,
        name: str | None = None,
        max_pending: int = MAX_PENDING_EVENTS,
        timeout: float = DELIVERY_TIMEOUT_S,
    ) -> Subscription:
        """Hand ``sink`` every new event once stored, however it came (see ``pipeline.sinks``)."""
        return self.recorder.sinks.subscribe(
            sink, name=name, max_pending=max_pending, timeout=timeout
        )

    def record(self, event: Event) -> Event:
        """Validate and queue an event of any kind; raises :class:`InvalidEventError` if bad."""
        event.validate(max_age_s=self.settings.metrics_retention_days * 86_400.0)
        if self.settings.enabled:
            self.recorder.put(event, event.size_hint())
        return event

    def record_quietly(self, make: Callable[[], Event]) -> Event | None:
        """Build, validate and queue an event; a failure is logged and counted, never raised."""
        try:
            return self.record(make())
        except InvalidEventError as exc:
            self.recorder.reject("invalid", exc)
        except Exception as exc:
            self.recorder.reject("internal_error", exc)
        return None

    def _base(self, project_id: str | None, timestamp: Timestamp, id: str | None) -> dict[str, Any]:
        base: dict[str, Any] = {
            "project_id": self.settings.project_id if project_id is None else project_id,
            "timestamp": to_epoch(timestamp),
        }
        if id is not None:
            base["id"] = id
        return base

    async def record_deployment_event(
        self,
        deployment_id: str,
        type: str,
        *,
        status: str | None = None,
        duration_ms: float | None = None,
        framework: str | None = None,
        project_id: str | None = None,
        timestamp: Timestamp = None,
        id: str | None = None,
    ) -> DeploymentEvent:
        """A deployment ``started``, ``in_progress`` or ``completed`` (with ``status``)."""
        ev = DeploymentEvent(
            **self._base(project_id, timestamp, id),
            deployment_id=deployment_id,
            type=type,
            status=status,
            duration_ms=duration_ms,
            framework=framework,
        )
        self.record(ev)
        return ev

    async def record_build_event(
        self,
        deployment_id: str,
        phase: str,
        *,
        start_time: Timestamp,
        end_time: Timestamp,
        status: str = "success",
        framework: str | None = None,
        asset_count: int | None = None,
        total_size_bytes: int | None = None,
        project_id: str | None = None,
        timestamp: Timestamp = None,
        id: str | None = None,
    ) -> BuildEvent:
        """One build phase (``clone``, ``install``, ``build``, ``optimize``, ``upload``)."""
        start = to_epoch(start_time)
        ev = BuildEvent(
            **self._base(project_id, start if timestamp is None else timestamp, id),
            deployment_id=deployment_id,
            phase=phase,
            start_time=start,
            end_time=to_epoch(end_time),
            status=status,
            framework=framework,
            asset_count=asset_count,
            total_size_bytes=total_size_bytes,
        )
        self.record(ev)
        return ev

    async def record_function_invocation(
        self,
        function_id: str,
        *,
        duration_ms: float,
        status: str = "success",
        cold_start: bool = False,
        memory_mb: float | None = None,
        deployment_id: str | None = None,
        error_type: str | None = None,
        error_message: str | None = None,
        project_id: str | None = None,
        timestamp: Timestamp = None,
        id: str | None = None,
    ) -> FunctionInvocation:
        """One function invocation, ``success`` or ``error``."""
        ev = FunctionInvocation(
            **self._base(project_id, timestamp, id),
            function_id=function_id,
            deployment_id=deployment_id,
            status=status,
            duration_ms=duration_ms,
            cold_start=cold_start,
            memory_mb=memory_mb,
            error_type=error_type,
            error_message=error_message,
        )
        self.record(ev)
        return ev

    async def record_domain_event(
        self,
        domain: str,
        type: str,
        *,
        expires_at: Timestamp = None,
        project_id: str | None = None,
        timestamp: Timestamp = None,
        id: str | None = None,
    ) -> DomainEvent:
        """A domain ``added``/``verified``/``removed`` or a certificate ``ssl_*`` event."""
        ev = DomainEvent(
            **self._base(project_id, timestamp, id),
            domain=domain,
            type=type,
            expires_at=None if expires_at is None else to_epoch(expires_at),
        )
        self.record(ev)
        return ev

    def capture_exception(
        self,
        exc: BaseException,
        *,
        severity: str = "medium",
        context: dict[str, Any] | None = None,
        project_id: str | None = None,
    ) -> ErrorEvent | None:
        """Record a handled exception. Never raises; returns the event, or None if dropped."""
        if not self.settings.error_tracking_enabled:
            return None
        pid = self.settings.project_id if project_id is None else project_id
        event = self.record_quietly(
            lambda: error_event(
                exc, project_id=pid, timestamp=time.time(), severity=severity, context=context
            )
        )
        return event if isinstance(event, ErrorEvent) else None

    def capture_unhandled(self, exc: BaseException, scope: Scope, root0: str = "") -> None:
        """Called by the middleware for an exception escaping the app (then re-raised).

        ``root0`` is the root_path the request arrived with, so the error is filed under
        the same endpoint as the request.
        """
        if not self.settings.error_tracking_enabled:
            return

        def make() -> Event:
            route = scope.get("route")
            endpoint = None
            if self.route_resolver is not None:
                endpoint = self.route_resolver(scope)
            elif route is not None:
                endpoint = route_template(route, root0, scope.get("root_path", ""))
            project = self.project_resolver(scope) if self.project_resolver else None
            return error_event(
                exc,
                project_id=project
                if isinstance(project, str) and project
                else self.settings.project_id,
                timestamp=time.time(),
                severity="high",
                handled=False,
                endpoint=endpoint,
                method=scope.get("method"),
            )

        self.record_quietly(make)

    def track_function(
        self,
        function_id: str,
        *,
        deployment_id: str | None = None,
        cold_start: bool = False,
        memory_mb: float | None = None,
        project_id: str | None = None,
    ) -> Tracker:
        """Time a function invocation: ``with``, ``async with`` or as a decorator.

        >>> @monitor.track_function("resize-image")          # doctest: +SKIP
        ... async def resize(...): ...
        """
        return function_tracker(
            self,
            function_id,
            project_id=self.settings.project_id if project_id is None else project_id,
            deployment_id=deployment_id,
            cold_start=cold_start,
            memory_mb=memory_mb,
        )

    def track_build_phase(
        self,
        deployment_id: str,
        phase: str,
        *,
        framework: str | None = None,
        project_id: str | None = None,
    ) -> Tracker:
        """Time a build phase: ``with monitor.track_build_phase("dep-1", "install"): ...``."""
        return build_phase_tracker(
            self,
            deployment_id,
            phase,
            project_id=self.settings.project_id if project_id is None else project_id,
            framework=framework,
        )

    # -- periodic work, retention and erasure ------------------------------------------

    def every(self, name: str, seconds: float, job: Callable[[], Awaitable[object]]) -> None:
        """Run ``job`` once per ``seconds`` across every worker and host sharing storage.

        >>> monitor.every("nightly-report", 86_400, send_report)       # doctest: +SKIP
        """
        self.scheduler.every(name, seconds, job)

    async def purge(self) -> dict[str, int]:
        """Delete what retention no longer keeps; rows deleted per kind (``asgimon purge``).

        Runs once per ``ANALYTICS_PURGE_INTERVAL`` on one worker by itself.
        """
        now, mono = time.time(), time.monotonic()
        if self._last_purge is not None:
            jump = (now - self._last_purge[0]) - (mono - self._last_purge[1])
            if abs(jump) > CLOCK_JUMP_S:
                # Cutoffs follow the wall clock; a jump forward deletes early, in small batches.
                log.warning("asgimon: clock jump detected (%+.0f s) since the last purge", jump)
        self._last_purge = (now, mono)
        return await self.storage.purge(
            before=retention.cutoffs(self.settings, now),
            batch_size=self.settings.purge_batch_size,
        )

    async def compact(self) -> int:
        """Pack the histograms of closed hour and day buckets, for fast reads over long ranges.

        Runs once per ``ANALYTICS_COMPACT_INTERVAL`` on one worker; buckets that ended in the
        last two minutes wait for the next run. Returns how many rollup rows were packed.
        """
        return await self.storage.compact(before=time.time() - COMPACT_SETTLE_S)

    async def forget_user(self, user_id: str) -> dict[str, int]:
        """Delete every record carrying ``user_id`` (API calls, errors), for privacy requests.

        Rollups hold no user ids and are kept. Returns rows deleted per kind.
        """
        if not isinstance(user_id, str) or not user_id or len(user_id) > 200:
            raise ValueError("user_id must be a non-empty string of at most 200 characters")
        return await self.storage.forget_user(user_id)

    # -- state -------------------------------------------------------------------------

    def stats(self) -> RecorderStats:
        return self.recorder.stats()

    async def health(self) -> dict[str, Any]:
        """Recorder ledger and storage state, as served at ``{mount}/api/health``."""
        stats = self.stats()
        probe = asyncio.ensure_future(self.storage.health())
        # Not wait_for: it waits for the cancelled call to unwind, and a hung driver can
        # take seconds to. The probe is left to finish (or fail) on its own.
        await asyncio.wait({probe}, timeout=HEALTH_TIMEOUT_S)
        storage: dict[str, Any]
        if not probe.done():
            probe.cancel()
            self._abandoned.add(probe)  # held until done, or asyncio may collect it pending
            probe.add_done_callback(_consume)
            probe.add_done_callback(self._abandoned.discard)
            storage = {"ok": False, "error": f"no answer within {HEALTH_TIMEOUT_S:g} s"}
        elif probe.exception() is not None:
            exc = probe.exception()
            storage = {"ok": False, "error": str(exc)[:500] or type(exc).__name__}
        else:
            storage = probe.result()
        # Degraded while storage fails now, not forever after one old failure.
        recent_failure = (
            stats.last_error_at is not None and time.time() - stats.last_error_at < DEGRADED_FOR_S
        )
        degraded = not storage.get("ok") or recent_failure
        return {
            "status": "ok" if not degraded else "degraded",
            "inFlight": self.requests.count,
            "recorder": {
                "running": stats.running,
                "recorded": stats.recorded,
                "written": stats.written,
                "duplicates": stats.duplicates,
                "pending": stats.pending,
                "pendingBytes": stats.pending_bytes,
                "dropped": stats.dropped,
                "droppedTotal": stats.dropped_total,
                "retries": stats.retries,
                "internalErrors": stats.internal_errors,
                "lastError": stats.last_error,
                "lastErrorAt": stats.last_error_at,
            },
            "storage": {**storage, "startError": self.storage_error},
            "jobs": self.scheduler.report(),
            "eventLoop": self.lag.snapshot(),
            "sinks": self.recorder.sinks.report(),
        }
