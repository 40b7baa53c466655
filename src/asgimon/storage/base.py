"""The storage protocol every backend implements, and what it returns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from asgimon.events import Event
from asgimon.rollups import Rollup

KINDS = ("api_call", "deployment", "build", "function", "domain", "error")


@dataclass(frozen=True, slots=True)
class WriteResult:
    """How many events of a batch were new, and how many were already stored."""

    inserted: int
    duplicates: int


@runtime_checkable
class Storage(Protocol):
    """Where events and rollups live.

    ``write`` is atomic per batch and idempotent on ``(project_id, id)``: events already
    stored are counted as duplicates and add nothing to the rollups. Driver errors are raised
    as a subclass of :class:`~asgimon.errors.StorageError`. Time ranges are half-open,
    ``start <= t < end``, in epoch seconds.
    """

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def write(self, events: Sequence[Event]) -> WriteResult: ...

    async def events(
        self,
        kind: str,
        *,
        project_id: str | None = None,
        start: float | None = None,
        end: float | None = None,
        limit: int = 1000,
    ) -> list[Event]:
        """Raw events of one kind, newest first."""
        ...

    async def count(
        self,
        kind: str,
        *,
        project_id: str | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> int: ...

    async def rollups(
        self,
        *,
        project_id: str,
        resolution: str,
        start: float,
        end: float,
        series_prefix: str = "",
    ) -> list[Rollup]:
        """Rollups whose bucket starts in ``[start, end)``, oldest first."""
        ...

    async def projects(self) -> list[str]:
        """Every project that has recorded anything, sorted."""
        ...

    async def health(self) -> dict[str, Any]:
        """A cheap round trip: ``{"ok": True, ...}`` or raises ``StorageError``."""
        ...

    async def purge(self, *, before: Mapping[str, float], batch_size: int = 5000) -> dict[str, int]:
        """Delete what is older than each cutoff (epoch seconds), in small batches.

        Keys are event kinds (by event time), ``rollup:minute`` / ``rollup:hour`` /
        ``rollup:day`` (by bucket start) and ``claims`` (periodic-job claims). Returns the
        number of rows deleted per key.
        """
        ...

    async def forget_user(self, user_id: str, *, batch_size: int = 5000) -> dict[str, int]:
        """Delete every record carrying this user id; rows deleted per kind."""
        ...

    async def claim(self, job: str, period_start: int, holder: str) -> bool:
        """Claim one period of a periodic job: True for exactly one caller per period,
        across every process sharing this store."""
        ...
