"""The Monitor's running parts, started in order and closed in reverse within one deadline.

Each part is a name, a ``start`` and a ``close(seconds_left)``. The Monitor lists them once;
starting enters each into one :class:`~contextlib.AsyncExitStack`, so a part added later
(the rate limiter, the alert engine, a plugin) is one more entry, not more steps in
``start`` and ``stop``. A part that fails to close is logged and the others still close:
the host's shutdown goes on whatever a part does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger("asgimon")

GRACE_S = 0.5
"""How far past the budget the closing may run, all parts together: a store's close (its
connections returned) gets this even when the recorder used the whole budget."""
MIN_CLOSE_S = 0.05


async def _nothing() -> None:
    return None


@dataclass(frozen=True, slots=True)
class Part:
    """``close`` gets the seconds left of the shutdown budget (it may take less, not more)."""

    name: str
    close: Callable[[float], Awaitable[None]]
    start: Callable[[], Awaitable[None]] = _nothing
    self_bounded: bool = False
    """Its close keeps to the time it is given and must not be cut short (the recorder
    counts what it could not write before returning); the others are cut at the deadline."""


class Parts:
    """Parts started in list order, closed in reverse, the whole close within a budget."""

    def __init__(self, parts: list[Part]) -> None:
        self.parts = parts
        self._stack: contextlib.AsyncExitStack | None = None
        self._deadline = 0.0

    async def start(self) -> None:
        stack = contextlib.AsyncExitStack()
        try:
            for part in self.parts:
                await part.start()
                stack.push_async_callback(self._close, part)
        except BaseException:
            await self.aclose(budget=1.0, stack=stack)
            raise
        self._stack = stack

    async def aclose(self, budget: float, stack: contextlib.AsyncExitStack | None = None) -> None:
        stack = stack or self._stack
        self._stack = None
        if stack is None:
            return
        self._deadline = time.monotonic() + budget
        await stack.aclose()

    async def _close(self, part: Part) -> None:
        now = time.monotonic()
        left = max(0.0, self._deadline - now)
        try:
            if part.self_bounded:
                await part.close(left)
                return
            # However a part waits, the rest still get their turn.
            async with asyncio.timeout(max(MIN_CLOSE_S, self._deadline + GRACE_S - now)):
                await part.close(left)
        except Exception as exc:
            log.warning("asgimon: closing %s failed: %r", part.name, exc)
