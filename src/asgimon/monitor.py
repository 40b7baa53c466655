"""The Monitor: one object that owns settings, storage and recorder, and hands out the rest."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any

from starlette.types import ASGIApp

from . import retention
from ._heap import freeze_startup_heap
from .alerts.engine import AlertEngine
from .dashboard import create_dashboard
from .dashboard.auth import AuthHook, bearer_subject
from .dashboard.mount import Mounted
from .errortracking.tracker import ErrorTracker
from .integrations import load_integrations
from .lag import LagProbe
from .middleware import ApiCallBuilder, AsgimonMiddleware
from .middleware.host import InFlight, Queue, RouteTable, ScopeResolver
from .parts import Part, Parts
from .pipeline.recorder import Recorder, RecorderStats
from .pipeline.scheduler import Scheduler
from .ratelimit.host import CostOf, HostLimits, TierOf
from .ratelimit.middleware import RateLimitMiddleware
from .recording import Recording
from .redis_pools import RedisPools
from .sampling import RawSampling
from .settings import Settings
from .storage import Storage, storage_from_url
from .storage.schemes import backend_of

COMPACT_SETTLE_S = 120.0
log = logging.getLogger("asgimon")

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


class Monitor(Recording):
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
        rate_limit_tier: TierOf | None = None,
        rate_limit_cost: CostOf | None = None,
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
            series_of=self.api_calls.series_of,
            raw_per_s=settings.api_call_raw_per_s,
        )
        self.errors = ErrorTracker(
            settings,
            storage,
            user_resolver=user_resolver,
            route_resolver=route_resolver,
            project_resolver=project_resolver,
        )
        """Error reports' rules, and the groups' lifecycle kept as errors are stored."""
        if settings.error_tracking_enabled:
            self.recorder.sinks.subscribe(self.errors.lifecycle, name="error-groups")
        self.alerts: AlertEngine | None = None
        """Alert rules judged as events are stored and once per period; None when off."""
        if settings.alerts_enabled:
            self.alerts = AlertEngine(settings, storage)
            self.recorder.sinks.subscribe(self.alerts.on_events, name="alerts")
            self.errors.lifecycle.listen(self.alerts.on_group)
        self.scheduler = Scheduler(storage)
        self.scheduler.every("purge", settings.purge_interval, self.purge)
        self.scheduler.every("compact", settings.compact_interval, self.compact)
        if self.alerts is not None:
            self.scheduler.every("alerts", settings.alerts_interval, self.alerts.evaluate)
        self.lag = LagProbe()
        self.rate_limits = HostLimits(
            settings,
            storage,
            put=self.recorder.put,
            user=user_resolver,
            project=project_resolver,
            tier=rate_limit_tier,
            cost=rate_limit_cost,
            subject=bearer_subject(settings) if settings.rate_limit_jwt_subject else None,
        )
        """The host app's rate limit: its limiter, overrides and administration."""
        self.redis = RedisPools()
        """Redis connections shared by the parts that use ``ANALYTICS_REDIS_URL``."""
        self.dashboard = create_dashboard(self, auth)
        """The sub-application mounted at ``mount_path``: the JSON API (and pages)."""
        # Loaded before storage starts: an integration may bring an event kind (a table).
        self.integrations = load_integrations(self)
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
            for k in (
                "user_resolver",
                "project_resolver",
                "route_resolver",
                "auth",
                "rate_limit_tier",
                "rate_limit_cost",
            )
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

        async def close_alerts(left: float) -> None:
            if self.alerts is not None:
                await self.alerts.aclose(min(1.0, left))

        async def start_alerts() -> None:
            if self.alerts is not None:
                await self.alerts.start()

        async def close_sinks(left: float) -> None:
            # What was stored before the end still reaches the subscribers, briefly.
            await recorder.sinks.aclose(min(0.5, left))

        return [
            Part("storage", lambda left: self.storage.close(), self._start_storage),
            Part("Redis connections", lambda left: self.redis.aclose()),
            Part("the dashboard's clients", lambda left: self.dashboard.aclose()),
            # Before the subscribers, which hand it events, and closed after them.
            Part("alert deliveries", close_alerts, start_alerts),
            Part("subscribers", close_sinks, recorder.sinks.start),
            Part("recorder", close_recorder, recorder.start, self_bounded=True),
            # After the recorder: what they record goes to it, and is drained by it.
            *self.integrations,
            # After the recorder: its close hands the last refusals to the recorder.
            Part("rate limit", lambda left: self.rate_limits.close(), self.rate_limits.start),
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

    def limited(self, app: ASGIApp) -> ASGIApp:
        """``app`` behind the host's rate limit (the middleware puts it inside its timing)."""
        return self.rate_limits.wrap(app)

    def gate(self, limited: ASGIApp) -> RateLimitMiddleware | None:
        return limited if isinstance(limited, RateLimitMiddleware) and limited.decides_now else None

    def excluded_paths(self) -> tuple[frozenset[str], tuple[str, ...]]:
        """Paths never recorded: exact ones, and prefixes (the dashboard's mount included)."""
        exact = {p for p in self.settings.exclude_paths if not p.endswith("*")}
        prefixes = {p[:-1] for p in self.settings.exclude_paths if p.endswith("*")}
        mount = self.settings.mount_path
        exact.add(mount)
        prefixes.add(mount + "/")
        return frozenset(exact), tuple(sorted(prefixes))

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
            "rateLimit": self.rate_limits.report(),
            "alerts": None if self.alerts is None else self.alerts.report(),
        }
