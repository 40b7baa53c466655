"""The events asgimon records: one dataclass per kind, each validated at the edge.

Every event has an ``id`` (a retried write with the same id is stored once), a
``project_id`` and a ``timestamp`` in epoch seconds (UTC). :meth:`Event.validate` reports
every bad field at once as an :class:`~asgimon.errors.InvalidEventError`. Each kind also says
which rollup series it feeds, with which value, and whether it counts as an error.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from . import series
from ._validate import MAX_DURATION_MS, MAX_PROJECT_ID, Checker
from .errors import InvalidEventError
from .fields import (
    BIG_INT,
    BOOL,
    FLOAT,
    INSTANT,
    JSON,
    LONG_TEXT,
    SMALL_INT,
    check,
    declared,
    incomplete,
    meta,
    spec,
    text,
)
from .series import API_TOTAL, ERROR_TOTAL, FUNCTION_TOTAL

MAX_ID = 64
MAX_NAME = 200
MAX_MESSAGE = 2000
MAX_STACK = 32_768
MAX_EXCEPTION = 65_536  # the chain's frames as JSON
MAX_SIZE_BYTES = 2**53

DEPLOYMENT_TYPES = frozenset({"started", "in_progress", "completed"})
OUTCOMES = frozenset({"success", "failure"})
BUILD_PHASES = frozenset({"clone", "install", "build", "optimize", "upload"})
FUNCTION_STATUSES = frozenset({"success", "error"})
DOMAIN_TYPES = frozenset(
    {"added", "verified", "ssl_issued", "ssl_renewed", "ssl_failed", "ssl_expiring", "removed"}
)
SEVERITIES = frozenset({"low", "medium", "high", "critical"})


def new_id() -> str:
    """A UUIDv7: time-ordered, so new rows append to the primary-key index."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & (2**48 - 1)) << 80 | 0x7 << 76 | (rand >> 62 & 0xFFF) << 64
    value |= 0b10 << 62 | rand & (2**62 - 1)
    return str(uuid.UUID(int=value))


@dataclass(slots=True, kw_only=True)
class Event:
    """Fields every kind has."""

    kind: ClassVar[str] = "event"
    """Its name in storage, on the wire and in the API (``?kind=``)."""
    table: ClassVar[str] = ""
    """Its SQL table, without the prefix."""
    retention: ClassVar[str] = "metrics_retention_days"
    """The setting (a field of :class:`~asgimon.settings.Settings`) of its retention in days."""
    ingest: ClassVar[bool] = False
    """Whether clients may post it to ``POST {mount}/api/events``."""

    id: str = field(default_factory=new_id)
    project_id: str = "default"
    timestamp: float = 0.0

    @property
    def at(self) -> datetime:
        """The timestamp as an aware UTC datetime."""
        return datetime.fromtimestamp(self.timestamp, UTC)

    def validate(self, *, now: float | None = None, max_age_s: float | None = None) -> None:
        """Raise :class:`InvalidEventError` naming every bad field; return if all are good."""
        c = Checker()
        c.identifier("id", self.id, max_len=MAX_ID)
        c.identifier("project_id", self.project_id, max_len=MAX_PROJECT_ID)
        c.timestamp("timestamp", self.timestamp, now=now, max_age_s=max_age_s)
        for f in declared(type(self)):
            check(c, f, getattr(self, f.name))
        self._check(c)
        if c.errors:
            raise InvalidEventError(self.kind, c.errors)

    def _check(self, c: Checker) -> None:
        """Checks across fields, beyond what each field's spec says."""

    # Rollups: which series this event adds to, with which value and error flag.
    def series(self) -> str | None:
        return None

    def rollup_series(self) -> tuple[str, ...]:
        """Every series the event adds to: its own, and for API calls the project's total."""
        own = self.series()
        return () if own is None else (own,)

    def value(self) -> float | None:
        return None

    def is_error(self) -> bool:
        return False

    def size_hint(self) -> int:
        """A cheap upper-bound guess of the bytes this event holds, for the queue's byte cap."""
        return 200


@dataclass(slots=True, kw_only=True)
class ApiCall(Event):
    """One HTTP request the middleware observed.

    ``duration_ms`` is until the response was complete (the latency users feel),
    ``ttfb_ms`` until the response headers were sent, ``total_ms`` until the app returned,
    background tasks included. A client that went away before the response finished is
    recorded with status 499.
    """

    kind: ClassVar[str] = "api_call"
    table: ClassVar[str] = "api_calls"

    method: str = spec("GET", text(16))
    endpoint: str = spec("<unmatched>", text(MAX_NAME * 2), indexed=True)
    status: int = spec(200, SMALL_INT, high=999)
    duration_ms: float = spec(0.0, FLOAT, high=MAX_DURATION_MS)
    ttfb_ms: float | None = spec(None, FLOAT, high=MAX_DURATION_MS)
    total_ms: float = spec(0.0, FLOAT, high=MAX_DURATION_MS)
    request_bytes: int | None = spec(None, BIG_INT, high=MAX_SIZE_BYTES)
    response_bytes: int = spec(0, BIG_INT, high=MAX_SIZE_BYTES)
    user_id: str | None = spec(None, text(200), indexed=True)
    request_id: str | None = spec(None, text(200))
    figures: dict[str, Any] | None = field(default=None, compare=False)
    """What code inside the request added (:func:`asgimon.context.add_figure`): handed to
    subscribers with the call, not stored."""

    def series(self) -> str:
        return series.api(self.method, self.endpoint)

    def rollup_series(self) -> tuple[str, ...]:
        # The total over every endpoint, kept as its own series: headline figures over a
        # month then read one row a day, not one per endpoint.
        return (series.api(self.method, self.endpoint), API_TOTAL)

    def value(self) -> float:
        return self.duration_ms

    def is_error(self) -> bool:
        return self.status >= 500


@dataclass(slots=True, kw_only=True)
class DeploymentEvent(Event):
    """A deployment started, progressed or completed (with success or failure)."""

    kind: ClassVar[str] = "deployment"
    table: ClassVar[str] = "deployment_events"
    ingest: ClassVar[bool] = True

    deployment_id: str = spec("", text(MAX_ID * 2), indexed=True, required=True, ident=True)
    type: str = spec("started", text(32), required=True, choices=DEPLOYMENT_TYPES)
    status: str | None = spec(None, text(32), choices=OUTCOMES)  # once completed
    duration_ms: float | None = spec(None, FLOAT, high=MAX_DURATION_MS)
    framework: str | None = spec(None, text(MAX_NAME), ident=True, slash=True)

    def _check(self, c: Checker) -> None:
        if self.type == "completed" and self.status is None:
            c.fail("status", "is required")

    def series(self) -> str:
        # Only completed deployments count in the deployment figures; the other steps have
        # their own series, so that a project with nothing else is still a known project.
        if self.type != "completed":
            return series.deploy_step(self.type)
        return series.deploy(self.framework)

    def value(self) -> float | None:
        return self.duration_ms if self.type == "completed" else None

    def is_error(self) -> bool:
        return self.type == "completed" and self.status == "failure"


@dataclass(slots=True, kw_only=True)
class BuildEvent(Event):
    """One phase of a build, with its start and end times (epoch seconds)."""

    kind: ClassVar[str] = "build"
    table: ClassVar[str] = "build_events"
    ingest: ClassVar[bool] = True

    deployment_id: str = spec("", text(MAX_ID * 2), indexed=True, required=True, ident=True)
    phase: str = spec("build", text(32), required=True, choices=BUILD_PHASES)
    start_time: float = spec(0.0, INSTANT, required=True)
    end_time: float = spec(0.0, INSTANT, required=True)
    status: str = spec("success", text(32), required=True, choices=OUTCOMES)
    framework: str | None = spec(None, text(MAX_NAME), ident=True, slash=True)
    asset_count: int | None = spec(None, BIG_INT, high=10**9)
    total_size_bytes: int | None = spec(None, BIG_INT, high=MAX_SIZE_BYTES)

    @property
    def duration_ms(self) -> float:
        return max(0.0, (self.end_time - self.start_time) * 1000.0)

    def _check(self, c: Checker) -> None:
        if (
            isinstance(self.start_time, int | float)
            and isinstance(self.end_time, int | float)
            and self.end_time < self.start_time
        ):
            c.fail("end_time", "must not be before start_time")

    def series(self) -> str:
        return series.build(self.phase, self.framework)

    def value(self) -> float:
        return self.duration_ms

    def is_error(self) -> bool:
        return self.status == "failure"


@dataclass(slots=True, kw_only=True)
class FunctionInvocation(Event):
    """One invocation of a serverless-style function."""

    kind: ClassVar[str] = "function"
    table: ClassVar[str] = "function_invocations"
    ingest: ClassVar[bool] = True

    function_id: str = spec("", text(MAX_ID * 2), indexed=True, required=True, ident=True)
    deployment_id: str | None = spec(None, text(MAX_ID * 2), ident=True)
    status: str = spec("success", text(32), required=True, choices=FUNCTION_STATUSES)
    duration_ms: float = spec(0.0, FLOAT, required=True, high=MAX_DURATION_MS)
    cold_start: bool = spec(False, BOOL)
    memory_mb: float | None = spec(None, FLOAT, high=1_048_576)
    error_type: str | None = spec(None, text(MAX_NAME), wire="error.type", required=True)
    error_message: str | None = spec(None, LONG_TEXT, wire="error.message", max_len=MAX_MESSAGE)

    def series(self) -> str:
        return series.function(self.function_id)

    def rollup_series(self) -> tuple[str, ...]:
        return (series.function(self.function_id), FUNCTION_TOTAL)

    def value(self) -> float:
        return self.duration_ms

    def is_error(self) -> bool:
        return self.status == "error"

    def size_hint(self) -> int:
        return 200 + len(self.error_message or "")


@dataclass(slots=True, kw_only=True)
class DomainEvent(Event):
    """A custom domain or its SSL certificate changed state."""

    kind: ClassVar[str] = "domain"
    table: ClassVar[str] = "domain_events"
    ingest: ClassVar[bool] = True

    domain: str = spec("", text(253), indexed=True, required=True, ident=True)
    type: str = spec("added", text(32), required=True, choices=DOMAIN_TYPES)
    expires_at: float | None = spec(None, INSTANT, high=2**33)

    def series(self) -> str:
        return series.domain(self.type)

    def is_error(self) -> bool:
        return self.type == "ssl_failed"


@dataclass(slots=True, kw_only=True)
class ErrorEvent(Event):
    """One captured exception (or explicit error report), already scrubbed."""

    kind: ClassVar[str] = "error"
    table: ClassVar[str] = "error_events"
    retention: ClassVar[str] = "error_log_retention_days"

    error_type: str = spec("Exception", text(MAX_NAME))
    message: str = spec("", LONG_TEXT, max_len=MAX_MESSAGE, blank=True)
    stack: str = spec("", LONG_TEXT, max_len=MAX_STACK, blank=True)
    # The chain as JSON, outermost first: [{type, value, frames: [{module, function,
    # filename, lineno, inApp, line, vars?}]}]; None for reports without frames.
    exception: str | None = spec(None, LONG_TEXT, max_len=MAX_EXCEPTION)
    fingerprint: str = spec("", text(MAX_ID), indexed=True)
    severity: str = spec("high", text(16), choices=SEVERITIES)
    handled: bool = spec(False, BOOL)
    endpoint: str | None = spec(None, text(MAX_NAME * 2), ident=True, slash=True)
    method: str | None = spec(None, text(16))
    request_id: str | None = spec(None, text(MAX_NAME))
    user_id: str | None = spec(None, text(MAX_NAME), indexed=True)
    deployment_id: str | None = spec(None, text(MAX_ID * 2), ident=True)
    context: dict[str, Any] = field(default_factory=dict, metadata=meta(JSON))

    def _check(self, c: Checker) -> None:
        if isinstance(self.fingerprint, str) and ":" in self.fingerprint:
            c.fail("fingerprint", "must not contain ':'")

    def series(self) -> str:
        # One series per group, carrying what the errors API breaks counts down by:
        # ``error:{severity}:{fingerprint}:{type}`` (fingerprints hold no colon).
        return series.error(self.severity, self.fingerprint, self.error_type)

    def rollup_series(self) -> tuple[str, ...]:
        return (self.series(), ERROR_TOTAL)

    def is_error(self) -> bool:
        return True

    def size_hint(self) -> int:
        return (
            300
            + len(self.message)
            + len(self.stack)
            + len(self.exception or "")
            + 64 * len(self.context)
        )


@dataclass(slots=True, kw_only=True)
class RateLimitEvent(Event):
    """Requests of one key the host's rate limit refused (or, in shadow mode, would have),
    counted over a short interval: ``count`` of them from ``timestamp`` to ``last_at``. One
    row per key, rule and interval keeps a flood of refusals from flooding the queue; the
    rollups' ``sum`` is the number of requests."""

    kind: ClassVar[str] = "ratelimit"
    table: ClassVar[str] = "rate_limit_denials"

    key: str = spec("", text(MAX_ID), indexed=True, required=True)
    rule: str = spec("default", text(MAX_NAME * 2), required=True)
    method: str = spec("GET", text(16))
    path: str = spec("/", text(MAX_NAME * 2), slash=True)
    limit: int = spec(0, BIG_INT, high=10**12)
    window_s: int = spec(0, BIG_INT, high=10**9)
    count: int = spec(1, BIG_INT, high=10**12)
    last_at: float = spec(0.0, INSTANT)
    shadow: bool = spec(False, BOOL)

    def series(self) -> str:
        return series.rate_limit(self.shadow, self.rule)

    def value(self) -> float:
        return float(self.count)


EVENT_TYPES: dict[str, type[Event]] = {}
"""Every kind of event, by its name: storage, retention, ingestion, the OpenAPI schema and
the event listing all read it, so a kind registered here is a kind all of them know."""

E = TypeVar("E", bound=type[Event])


def register(cls: E) -> E:
    """Add an event class to :data:`EVENT_TYPES` (usable as a decorator)."""
    if not cls.table:
        raise ValueError(f"{cls.__name__} names no table")
    if missing := incomplete(cls):
        raise ValueError(f"{cls.__name__}: " + "; ".join(missing))
    known = EVENT_TYPES.get(cls.kind)
    if known is not None and known is not cls:
        raise ValueError(f"the kind {cls.kind!r} is {known.__name__}'s already")
    EVENT_TYPES[cls.kind] = cls
    return cls


for _cls in (
    ApiCall,
    DeploymentEvent,
    BuildEvent,
    FunctionInvocation,
    DomainEvent,
    ErrorEvent,
    RateLimitEvent,
):
    register(_cls)
BUILT_IN_KINDS = frozenset(EVENT_TYPES)


def kinds_with_users() -> list[str]:
    """The kinds whose events may carry a user id: what erasing a user deletes from."""
    return [kind for kind, cls in EVENT_TYPES.items() if "user_id" in cls.__dataclass_fields__]


"""The kinds asgimon itself records, whose tables the schema versions create."""
