"""How long the event loop is held: the probe behind ``eventLoop`` in ``/api/health``.

Three figures over the last minute, because they answer different questions:

* **lag**: how late a timer set for every :data:`INTERVAL_S` fires. It is what a request in
  flight waits, whoever holds the loop (the host's handlers, the server, asgimon).
* **own work**: the longest stretch asgimon's background writer ran without yielding,
  measured by the writer itself at each yield (see :mod:`asgimon._slices`). What a driver
  call does on the loop before it suspends (SQLAlchemy binding up to 250 rows) is not in
  it; the lag figures see it.
* **gc**: the longest garbage-collection pause in the process; a full collection walks every
  object the process holds, and the loop waits for it like for any other work.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
from collections import deque
from time import monotonic, perf_counter
from typing import Any

WINDOW_S = 60.0
INTERVAL_S = 0.01


class Longest:
    """The longest duration noted per second, over the last :data:`WINDOW_S` seconds."""

    __slots__ = ("_seconds",)

    def __init__(self) -> None:
        self._seconds: deque[list[float]] = deque()

    def note(self, duration: float) -> None:
        now = int(monotonic())
        seconds = self._seconds
        if seconds and seconds[-1][0] == now:
            if duration > seconds[-1][1]:
                seconds[-1][1] = duration
            return
        seconds.append([now, duration])
        while seconds and seconds[0][0] <= now - WINDOW_S:
            seconds.popleft()

    def longest(self) -> float | None:
        cutoff = monotonic() - WINDOW_S
        # Copied in one C call: a collection in another thread may note() meanwhile.
        found = [d for t, d in tuple(self._seconds) if t > cutoff]
        return max(found) if found else None


OWN_WORK = Longest()
"""Every writer in the process notes its stretches here (one loop, one figure)."""

GC_PAUSES = Longest()
_gc_started = 0.0
_gc_users = 0


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    global _gc_started
    if phase == "start":
        _gc_started = perf_counter()
    else:
        GC_PAUSES.note(perf_counter() - _gc_started)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


class LagProbe:
    """A timer every :data:`INTERVAL_S`; how late each fires, kept for :data:`WINDOW_S`."""

    def __init__(self, interval: float = INTERVAL_S) -> None:
        self.interval = interval
        self._samples: deque[tuple[float, float]] = deque(maxlen=int(WINDOW_S / interval) + 1)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        global _gc_users
        if self._task is not None:
            return
        if _gc_users == 0:
            gc.callbacks.append(_on_gc)
        _gc_users += 1
        self._task = asyncio.get_running_loop().create_task(self._run(), name="asgimon-lag")

    async def aclose(self) -> None:
        global _gc_users
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.wait({task})  # a cancel of this caller still propagates
        _gc_users -= 1
        if _gc_users == 0:
            with contextlib.suppress(ValueError):
                gc.callbacks.remove(_on_gc)

    async def _run(self) -> None:
        interval = self.interval
        samples = self._samples
        while True:
            due = perf_counter() + interval
            await asyncio.sleep(interval)
            now = perf_counter()
            samples.append((monotonic(), max(0.0, now - due)))

    def snapshot(self) -> dict[str, Any]:
        cutoff = monotonic() - WINDOW_S
        lags = sorted(lag for t, lag in tuple(self._samples) if t > cutoff)
        p99 = lags[min(len(lags) - 1, math.ceil(0.99 * len(lags)) - 1)] if lags else None
        return {
            "windowS": WINDOW_S,
            "samples": len(lags),
            "lagP99Ms": _ms(p99),
            "lagMaxMs": _ms(lags[-1] if lags else None),
            "ownLongestMs": _ms(OWN_WORK.longest()),
            "gcLongestMs": _ms(GC_PAUSES.longest()),
            "gcFrozenObjects": gc.get_freeze_count(),
        }
