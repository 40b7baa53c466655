"""Periodic jobs that run once per period across every worker and host sharing storage.

Each period of each job is claimed in storage (``Storage.claim``: an insert that only one
caller can win), and only the winner runs it. There is no leader to elect or lose: a worker
that dies mid-job costs that one period, and the next period is claimed afresh. Periods
are aligned on the wall clock, which all hosts share; waits between ticks use the
monotonic clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from asgimon.errors import StorageUnavailable
from asgimon.storage.base import Storage

log = logging.getLogger("asgimon.scheduler")

Job = Callable[[], Awaitable[object]]
_TICK_S = 1.0
# Storage that cannot be reached is asked again after 1, 2, 4 ... up to 30 s: a worker
# pool must not knock on a database that refuses connections once a second per job.
_MAX_BACKOFF_S = 30.0
MAX_EVERY_S = 7 * 86_400


@dataclass(slots=True)
class _Entry:
    name: str
    every: float
    run: Job
    last_period: int = -1
    runs: int = 0
    failures: int = 0
    last_error: str | None = field(default=None)


class Scheduler:
    """Runs registered jobs, each once per ``every`` seconds across all workers."""

    def __init__(self, storage: Storage, *, tick: float = _TICK_S) -> None:
        self.storage = storage
        self.tick = tick
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self._jobs: dict[str, _Entry] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._backoff = 0.0

    def every(self, name: str, seconds: float, run: Job) -> None:
        """Register ``run`` to happen once per ``seconds`` (at least 1) under ``name``."""
        if not 1 <= seconds <= MAX_EVERY_S:
            raise ValueError(
                f"a periodic job runs every 1 s to 7 days (claims are kept 15 days), not {seconds}"
            )
        self._jobs[name] = _Entry(name, seconds, run)

    def report(self) -> dict[str, dict[str, object]]:
        """What each job has done in this process, for the health endpoint."""
        return {
            e.name: {
                "every": e.every,
                "runs": e.runs,
                "failures": e.failures,
                "lastError": e.last_error,
            }
            for e in self._jobs.values()
        }

    def runs(self, name: str) -> int:
        """How many periods of ``name`` this process has run."""
        return self._jobs[name].runs

    async def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="asgimon-scheduler")

    async def stop(self, timeout: float = 5.0) -> None:
        """Let a running job finish (up to ``timeout``), then stop ticking."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()
            # A job stuck in a hung driver may take long to unwind; don't wait for it.
            await asyncio.wait({task}, timeout=min(timeout, 0.25))

    async def _loop(self) -> None:
        self._stopping.clear()
        while not self._stopping.is_set():
            reached = True
            for entry in list(self._jobs.values()):
                if self._stopping.is_set():
                    return
                reached = await self._maybe_run(entry, time.time())
                if not reached:
                    break
            if reached:
                self._backoff = 0.0
                wait = self._until_next_period()
            else:
                self._backoff = min(_MAX_BACKOFF_S, max(self.tick, self._backoff * 2))
                wait = self._backoff
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), wait)

    def _until_next_period(self) -> float:
        """Wake just after the next period begins, so a slow tick never skips a period."""
        now = time.time()
        starts = [(now // e.every + 1) * e.every for e in self._jobs.values()]
        return max(0.0, min([self.tick, *(start - now + 0.005 for start in starts)]))

    async def _maybe_run(self, entry: _Entry, now: float) -> bool:
        """Run ``entry`` if its period is new and this worker wins it; False if storage is down."""
        period = int(now // entry.every * entry.every)
        if period <= entry.last_period:
            return True
        try:
            won = await self.storage.claim(entry.name, period, self.holder)
        except Exception as exc:
            log.warning("asgimon: could not claim %s: %r", entry.name, exc)
            # Storage down: the loop backs off and asks again. Any other failure is this
            # job's own and must not keep the other jobs from running.
            return not isinstance(exc, StorageUnavailable)
        entry.last_period = period
        if not won:
            return True
        try:
            await entry.run()
            entry.runs += 1
        except Exception as exc:
            entry.failures += 1
            entry.last_error = repr(exc)[:300]
            log.warning("asgimon: periodic job %s failed: %r", entry.name, exc)
        return True
