"""Background work in slices: give the event loop back before a stretch runs long.

asgimon's writer shares the host's event loop. Converting, aggregating and encoding a batch
of a thousand events is several milliseconds of pure Python, and every request in flight
would wait behind it; so that work runs in slices of at most :data:`SLICE_S` with a yield
between them. A thread would not help: it holds the GIL for as long and is switched out
only every 5 ms.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from time import perf_counter
from typing import TypeVar

from .lag import OWN_WORK

T = TypeVar("T")

SLICE_S = 0.0005
"""The longest stretch between yields; half the 1 ms asgimon allows itself, for margin."""

CHECK_EVERY = 16
"""Items between clock readings: a reading costs about as much as converting one item."""


class Slicer:
    """Measures the current stretch of work and yields to the loop once it is due.

    One per unit of background work (a batch write). Around an ``await`` that suspends (a
    driver call), call :meth:`mark` before and :meth:`restart` after: the stretch ends at
    the call and a new one begins when it returns.
    """

    __slots__ = ("_since", "limit")

    def __init__(self, limit: float = SLICE_S) -> None:
        self.limit = limit
        self._since = perf_counter()

    def restart(self) -> None:
        self._since = perf_counter()

    def mark(self) -> None:
        """The stretch ends here (an await that gives the loop back follows)."""
        OWN_WORK.note(perf_counter() - self._since)

    def due(self) -> bool:
        return perf_counter() - self._since >= self.limit

    async def pause(self) -> None:
        """Yield to the loop (every ready callback runs first), then start a new stretch."""
        self.mark()
        await asyncio.sleep(0)
        self._since = perf_counter()

    async def each(self, fn: Callable[[Sequence[T]], object], items: Sequence[T]) -> None:
        """``fn`` over consecutive runs of ``items``, yielding whenever a slice is used up."""
        for chunk in chunks(items, CHECK_EVERY):
            fn(chunk)
            if self.due():
                await self.pause()


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
