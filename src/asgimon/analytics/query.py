"""What an analytics computation is given: the store, the project, the range and the settings."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from asgimon.errortracking.state import GroupState
from asgimon.events import Event
from asgimon.rollups import Rollup, Window
from asgimon.settings import Settings
from asgimon.storage.base import RollupReader, SeriesTotal

from .ranges import BadQuery, TimeRange


class Reader(RollupReader, Protocol):
    """The reads analytics need: a :class:`~asgimon.storage.base.Storage`, or a cache over one."""

    async def events(
        self,
        kind: str,
        *,
        project_id: str | None = None,
        start: float | None = None,
        end: float | None = None,
        limit: int = 1000,
        match: Mapping[str, Any] | None = None,
    ) -> list[Event]: ...

    async def error_groups(
        self, project_id: str, fingerprints: Sequence[str] | None = None
    ) -> list[GroupState]: ...


@dataclass(frozen=True, slots=True)
class Query:
    storage: Reader
    settings: Settings
    project_id: str
    span: TimeRange
    now: float
    params: Mapping[str, str] = field(default_factory=dict)

    def int_param(self, name: str, default: int, low: int, high: int) -> int:
        """An integer query parameter within ``[low, high]``; :class:`BadQuery` otherwise."""
        raw = self.params.get(name)
        if raw is None:
            return default
        # The length first: int() of thousands of digits is slow, then refused by Python.
        if (
            len(raw) > len(str(high))
            or not raw.isascii()
            or not raw.isdigit()
            or not low <= int(raw) <= high
        ):
            raise BadQuery(name, f"must be an integer from {low} to {high}")
        return int(raw)

    def choice_param(self, name: str, choices: tuple[str, ...], default: str | None) -> str | None:
        raw = self.params.get(name)
        if raw is None:
            return default
        if raw not in choices:
            raise BadQuery(name, "must be one of " + ", ".join(choices))
        return raw

    # The reads of this project over this range (the storage's, with those filled in).

    def rollups(self, prefix: str | tuple[str, ...]) -> Awaitable[list[Rollup]]:
        """Per series and bucket."""
        return self.storage.rollups(self.window, prefix)

    def series_rollups(self, prefix: str | tuple[str, ...]) -> Awaitable[list[Rollup]]:
        """Each series merged over the range."""
        return self.storage.series_rollups(self.window, prefix)

    def series_totals(self, prefix: str | tuple[str, ...]) -> Awaitable[list[SeriesTotal]]:
        """Each series summed over the range, no histogram."""
        return self.storage.series_totals(self.window, prefix)

    def bucket_totals(self, prefix: str | tuple[str, ...]) -> Awaitable[list[Rollup]]:
        """Every series summed per bucket, no histogram."""
        return self.storage.bucket_totals(self.window, prefix)

    def events(
        self, kind: str, limit: int, match: Mapping[str, Any] | None = None
    ) -> Awaitable[list[Event]]:
        """The newest raw events of the range (those matching ``match``, if given)."""
        return self.storage.events(
            kind,
            project_id=self.project_id,
            start=self.span.start,
            end=self.span.end,
            limit=limit,
            match=match,
        )

    def error_groups(self) -> Awaitable[list[GroupState]]:
        """The project's error groups' lifecycle (all of them: it has no time range)."""
        return self.storage.error_groups(self.project_id)

    @property
    def window(self) -> Window:
        span = self.span
        return Window(self.project_id, span.resolution, span.start, span.end)
