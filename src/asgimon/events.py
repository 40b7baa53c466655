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
from typing import Any, ClassVar

from ._validate import MAX_DURATION_MS, MAX_PROJECT_ID, Checker
from .errors import InvalidEventError

MAX_ID = 64
MAX_NAME = 200
MAX_MESSAGE = 2000
MAX_STACK = 32_768
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
        self._check(c)
        if c.errors:
            raise InvalidEventError(self.kind, c.errors)

    def _check(self, c: Checker) -> None:
        """Kind-specific checks."""

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

    method: str = "GET"
    endpoint: str = "<unmatched>"
    status: int = 200
    duration_ms: float = 0.0
    ttfb_ms: float | None = None
    total_ms: float = 0.0
    request_bytes: int | None = None
    response_bytes: int = 0
    user_id: str | None = None
    request_id: str | None = None

    def _check(self, c: Checker) -> None:
        c.text("method", self.method, max_len=16)
        c.text("endpoint", self.endpoint, max_len=MAX_NAME * 2)
        c.number("status", self.status, high=999, required=True, integer=True)
        c.number("duration_ms", self.duration_ms, high=MAX_DURATION_MS, required=True)
        c.number("ttfb_ms", self.ttfb_ms, high=MAX_DURATION_MS)
        c.number("total_ms", self.total_ms, high=MAX_DURATION_MS, required=True)
        c.number("request_bytes", self.request_bytes, high=MAX_SIZE_BYTES, integer=True)
        c.number("response_bytes", self.response_bytes, high=MAX_SIZE_BYTES, integer=True)
        c.text("user_id", self.user_id, max_len=MAX_NAME, required=False)
        c.text("request_id", self.request_id, max_len=MAX_NAME, required=False)

    def series(self) -> str:
        return f"api:{self.method} {self.endpoint}"

    def rollup_series(self) -> tuple[str, ...]:
        # The total over every endpoint, kept as its own series: headline figures over a
        # month then read one row a day, not one per endpoint.
        return (f"api:{self.method} {self.endpoint}", API_TOTAL)

    def value(self) -> float:
        return self.duration_ms

    def is_error(self) -> bool:
        return self.status >= 500


@dataclass(slots=True, kw_only=True)
class DeploymentEvent(Event):
    """A deployment started, progressed or completed (with success or failure)."""

    kind: ClassVar[str] = "deployment"

    deployment_id: str = ""
    type: str = "started"
    status: str | None = None
    duration_ms: float | None = None
    framework: str | None = None

    def _check(self, c: Checker) -> None:
        c.identifier("deployment_id", self.deployment_id, max_len=MAX_ID * 2)
        c.text("type", self.type, max_len=32, choices=DEPLOYMENT_TYPES)
        c.text(
            "status", self.status, max_len=32, required=self.type == "completed", choices=OUTCOMES
        )
        c.number("duration_ms", self.duration_ms, high=MAX_DURATION_MS)
        c.identifier("framework", self.framework, max_len=MAX_NAME, required=False, slash=True)

    def series(self) -> str:
        # Only completed deployments count in the deployment figures; the other steps have
        # their own series, so that a project with nothing else is still a known project.
        if self.type != "completed":
            return f"deploystep:{self.type}"
        return f"deploy:{self.framework or '-'}"

    def value(self) -> float | None:
        return self.duration_ms if self.type == "completed" else None

    def is_error(self) -> bool:
        return self.type == "completed" and self.status == "failure"


@dataclass(slots=True, kw_only=True)
class BuildEvent(Event):
    """One phase of a build, with its start and end times (epoch seconds)."""

    kind: ClassVar[str] = "build"

    deployment_id: str = ""
    phase: str = "build"
    start_time: float = 0.0
    end_time: float = 0.0
    status: str = "success"
    framework: str | None = None
    asset_count: int | None = None
    total_size_bytes: int | None = None

    @property
    def duration_ms(self) -> float:
        return max(0.0, (self.end_time - self.start_time) * 1000.0)

    def _check(self, c: Checker) -> None:
        c.identifier("deployment_id", self.deployment_id, max_len=MAX_ID * 2)
        c.text("phase", self.phase, max_len=32, choices=BUILD_PHASES)
        c.timestamp("start_time", self.start_time)
        c.timestamp("end_time", self.end_time)
        if (
            isinstance(self.start_time, int | float)
            and isinstance(self.end_time, int | float)
            and self.end_time < self.start_time
        ):
            c.fail("end_time", "must not be before start_time")
        c.text("status", self.status, max_len=32, choices=OUTCOMES)
        c.identifier("framework", self.framework, max_len=MAX_NAME, required=False, slash=True)
        c.number("asset_count", self.asset_count, high=10**9, integer=True)
        c.number("total_size_bytes", self.total_size_bytes, high=MAX_SIZE_BYTES, integer=True)

    def series(self) -> str:
        return f"build:{self.phase}:{self.framework or '-'}"

    def value(self) -> float:
        return self.duration_ms

    def is_error(self) -> bool:
        return self.status == "failure"


@dataclass(slots=True, kw_only=True)
class FunctionInvocation(Event):
    """One invocation of a serverless-style function."""

    kind: ClassVar[str] = "function"

    function_id: str = ""
    deployment_id: str | None = None
    status: str = "success"
    duration_ms: float = 0.0
    cold_start: bool = False
    memory_mb: float | None = None
    error_type: str | None = None
    error_message: str | None = None

    def _check(self, c: Checker) -> None:
        c.identifier("function_id", self.function_id, max_len=MAX_ID * 2)
        c.identifier("deployment_id", self.deployment_id, max_len=MAX_ID * 2, required=False)
        c.text("status", self.status, max_len=32, choices=FUNCTION_STATUSES)
        c.number("duration_ms", self.duration_ms, high=MAX_DURATION_MS, required=True)
        c.flag("cold_start", self.cold_start)
        c.number("memory_mb", self.memory_mb, high=1_048_576)
        c.text("error_type", self.error_type, max_len=MAX_NAME, required=False)
        c.text("error_message", self.error_message, max_len=MAX_MESSAGE, required=False)

    def series(self) -> str:
        return f"fn:{self.function_id}"

    def rollup_series(self) -> tuple[str, ...]:
        return (f"fn:{self.function_id}", FUNCTION_TOTAL)

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

    domain: str = ""
    type: str = "added"
    expires_at: float | None = None

    def _check(self, c: Checker) -> None:
        c.identifier("domain", self.domain, max_len=253)
        c.text("type", self.type, max_len=32, choices=DOMAIN_TYPES)
        if self.expires_at is not None:
            c.number("expires_at", self.expires_at, high=2**33)

    def series(self) -> str:
        return f"domain:{self.type}"

    def is_error(self) -> bool:
        return self.type == "ssl_failed"


@dataclass(slots=True, kw_only=True)
class ErrorEvent(Event):
    """One captured exception (or explicit error report), already scrubbed."""

    kind: ClassVar[str] = "error"

    error_type: str = "Exception"
    message: str = ""
    stack: str = ""
    fingerprint: str = ""
    severity: str = "high"
    handled: bool = False
    endpoint: str | None = None
    method: str | None = None
    request_id: str | None = None
    user_id: str | None = None
    deployment_id: str | None = None
    context: dict[str, Any] = field(default_factory=dict)

    def _check(self, c: Checker) -> None:
        c.text("error_type", self.error_type, max_len=MAX_NAME)
        c.text("message", self.message, max_len=MAX_MESSAGE, required=False)
        c.text("stack", self.stack, max_len=MAX_STACK, required=False)
        c.text("fingerprint", self.fingerprint, max_len=MAX_ID)
        if isinstance(self.fingerprint, str) and ":" in self.fingerprint:
            c.fail("fingerprint", "must not contain ':'")
        c.text("severity", self.severity, max_len=16, choices=SEVERITIES)
        c.flag("handled", self.handled)
        c.identifier("endpoint", self.endpoint, max_len=MAX_NAME * 2, required=False, slash=True)
        c.identifier("deployment_id", self.deployment_id, max_len=MAX_ID * 2, required=False)
        for name in ("method", "request_id", "user_id"):
            c.text(name, getattr(self, name), max_len=MAX_NAME * 2, required=False)
        c.json_object("context", self.context)

    def series(self) -> str:
        # One series per group, carrying what the errors API breaks counts down by:
        # ``error:{severity}:{fingerprint}:{type}`` (fingerprints hold no colon).
        return f"error:{self.severity}:{self.fingerprint}:{self.error_type}"

    def rollup_series(self) -> tuple[str, ...]:
        return (self.series(), ERROR_TOTAL)

    def is_error(self) -> bool:
        return True

    def size_hint(self) -> int:
        return 300 + len(self.message) + len(self.stack) + 64 * len(self.context)


API_TOTAL = "all:api"
FUNCTION_TOTAL = "all:fn"
ERROR_TOTAL = "all:error"
"""The series every API call, function invocation and error of a project also adds to."""
TOTAL_SERIES = frozenset({API_TOTAL, FUNCTION_TOTAL, ERROR_TOTAL})

EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (ApiCall, DeploymentEvent, BuildEvent, FunctionInvocation, DomainEvent, ErrorEvent)
}
