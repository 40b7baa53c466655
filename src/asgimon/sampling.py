"""Which API calls are kept as raw rows: every error and slow one, a share of the rest.

Rollups always count every call; sampling only thins the raw rows that the event listing
reads, which are most of what a write costs. The recorder chooses for the middleware's calls
and counts the others per batch (:mod:`asgimon.pipeline.counted`). For an event given to a
store directly the choice is a function of the event and the settings alone (its id, status
and duration against the rate and the slow threshold), so a retry chooses as the first
attempt did, and a sampled-out call leaves its id behind (a narrow table on SQL, a marker on
Redis) so that a retry of it is found to be a duplicate.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from .events import ApiCall, Event

_SPAN = 2**32  # crc32's range


@dataclass(frozen=True, slots=True)
class RawSampling:
    """``rate``: the share (0 to 1) of ordinary calls kept raw. Calls with a status of 500
    or more, and those that took ``slow_ms`` or longer, are always kept."""

    rate: float = 1.0
    slow_ms: float = 2000.0
    _below: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate must be between 0 and 1, not {self.rate!r}")
        object.__setattr__(self, "_below", round(self.rate * _SPAN))

    @property
    def keeps_all(self) -> bool:
        return self._below >= _SPAN

    def keeps(self, ev: Event) -> bool:
        """Whether ``ev`` is stored as a raw row (every kind but API calls always is)."""
        if self._below >= _SPAN or not isinstance(ev, ApiCall):
            return True
        if ev.status >= 500 or ev.duration_ms >= self.slow_ms:
            return True
        # crc32, not hash(): str hashes differ between processes.
        return zlib.crc32(ev.id.encode()) < self._below


KEEP_ALL = RawSampling()
