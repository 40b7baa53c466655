"""What the host records by hand: deployments, builds, invocations, domains, errors.

A part of the :class:`~asgimon.monitor.Monitor` (its base class), kept apart so that the
Monitor's own module holds its parts and their lifecycle only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from http import HTTPStatus
from typing import Any

from starlette.types import Scope

from ._validate import to_epoch
from .errors import InvalidEventError
from .errortracking.capture import current_stack, exception_event, message_event, reported
from .errortracking.tracker import ErrorTracker
from .events import BuildEvent, DeploymentEvent, DomainEvent, ErrorEvent, Event, FunctionInvocation
from .middleware.host import ScopeResolver
from .pipeline.recorder import Recorder
from .pipeline.sinks import DELIVERY_TIMEOUT_S, MAX_PENDING_EVENTS, Sink, Subscription
from .settings import Settings
from .tracking import Tracker, build_phase_tracker, function_tracker

Timestamp = datetime | float | int | None
_PHRASES = frozenset(s.value for s in HTTPStatus)


class Recording:
    """The ``record_*``, ``capture_*`` and ``track_*`` methods of the Monitor."""

    settings: Settings
    recorder: Recorder
    errors: ErrorTracker
    route_resolver: ScopeResolver | None
    project_resolver: ScopeResolver | None

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
        fingerprint: str | Sequence[str] | None = None,
        project_id: str | None = None,
    ) -> ErrorEvent | None:
        """Record a handled exception. Never raises; returns the event, or None if dropped.

        Inside a request it carries the request's endpoint, user and (scrubbed) headers.
        ``fingerprint`` replaces the grouping (``"{{ default }}"`` in it extends it)."""
        if not self.settings.error_tracking_enabled or reported(exc):
            return None
        errors = self.errors
        event = self.record_quietly(
            lambda: exception_event(
                exc,
                errors.where(None, project_id=project_id),
                errors.rules,
                severity=severity,
                handled=True,
                context=context,
                fingerprint_parts=fingerprint,
            )
        )
        return event if isinstance(event, ErrorEvent) else None

    def capture_message(
        self,
        message: str,
        *,
        severity: str = "medium",
        context: dict[str, Any] | None = None,
        fingerprint: str | Sequence[str] | None = None,
        project_id: str | None = None,
    ) -> ErrorEvent | None:
        """Record a message as an error report (with the caller's stack, for reading)."""
        if not self.settings.error_tracking_enabled:
            return None
        errors = self.errors
        event = self.record_quietly(
            lambda: message_event(
                str(message),
                errors.where(None, project_id=project_id),
                errors.rules,
                severity=severity,
                context=context,
                fingerprint_parts=fingerprint,
                stack=current_stack(skip=3),
            )
        )
        return event if isinstance(event, ErrorEvent) else None

    def capture_unhandled(self, exc: BaseException, scope: Scope, root0: str = "") -> None:
        """Called by the middleware for an exception escaping the app (then re-raised).

        ``root0`` is the root_path the request arrived with, so the error is filed under
        the same endpoint as the request.
        """
        if not self.settings.error_tracking_enabled or reported(exc):
            return
        errors = self.errors
        self.record_quietly(
            lambda: exception_event(
                exc, errors.where(scope, root0=root0), errors.rules, severity="high", handled=False
            )
        )

    @property
    def failing_statuses(self) -> frozenset[int]:
        if not self.settings.error_tracking_enabled:
            return frozenset()
        return self.errors.failing_statuses

    def capture_response(self, status: int, scope: Scope, root0: str = "") -> None:
        """Called by the middleware for a failing status the app answered without raising."""
        errors = self.errors

        def make() -> Event:
            at = errors.where(scope, root0=root0)
            title = HTTPStatus(status).phrase if status in _PHRASES else ""
            route = at.endpoint or "<unmatched>"
            return message_event(
                f"{at.method} {route} answered {status} {title}".rstrip(),
                at,
                errors.rules,
                severity="high" if status >= 500 else "medium",
                error_type=f"HTTP {status}",
                template=f"{at.method} {route} {status}",
                context={"status": status},
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
        pid = self.settings.project_id if project_id is None else project_id
        return function_tracker(
            self,
            function_id,
            project_id=pid,
            deployment_id=deployment_id,
            cold_start=cold_start,
            memory_mb=memory_mb,
            # The invocation's error message is stored too: scrubbed like a report.
            scrub=self.errors.scrub_text,
            on_error=lambda exc: self.capture_exception(exc, severity="high", project_id=pid),
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
