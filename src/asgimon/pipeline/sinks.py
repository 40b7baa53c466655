"""Fan-out of stored events to subscribers (the live stream, alert rules, exporters).

Every event reaches storage through one place, the recorder (queued from the middleware and
``record_*``, or written through from ``POST /api/events``), and once a batch is stored the
events that were new in it are handed here (of the API calls counted without a row, only
those carrying figures: see :mod:`asgimon.pipeline.counted`). Each subscriber has its own
bounded queue and its own task, so a slow or failing subscriber costs only itself: past its
bound the oldest batches are dropped and counted, a delivery that takes longer than
``timeout`` is abandoned and counted, an exception is logged and counted, and the writer
never waits for any of them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from asgimon.events import Event

log = logging.getLogger("asgimon.sinks")

Sink = Callable[[Sequence[Event]], Awaitable[object]]
"""An async callable that receives each stored batch's new events, in the order stored."""

MAX_PENDING_EVENTS = 10_000
DELIVERY_TIMEOUT_S = 5.0
_LOG_EVERY_S = 10.0


class Subscription:
    """One subscriber: its queue, its task and its counts."""

    def __init__(self, name: str, sink: Sink, max_pending: int, timeout: float) -> None:
        self.name = name
        self.sink = sink
        self.max_pending = max_pending
        self.timeout = timeout
        self.delivered = 0
        self.dropped = 0
        self.failures = 0
        self.timeouts = 0
        self.last_error: str | None = None
        self._batches: deque[Sequence[Event]] = deque()
        self._pending = 0
        self._delivering = 0
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_log = -_LOG_EVERY_S

    def offer(self, events: Sequence[Event]) -> None:
        self._batches.append(events)
        self._pending += len(events)
        # The newest events matter most to a live view or an alert: the oldest go first.
        while self._pending > self.max_pending and len(self._batches) > 1:
            self._drop(self._batches.popleft())
        if self._pending > self.max_pending:  # one batch larger than the bound
            self._drop(self._batches.popleft())
        self._ready.set()

    def _drop(self, batch: Sequence[Event]) -> None:
        self._pending -= len(batch)
        self.dropped += len(batch)
        self._warn(f"subscriber {self.name!r} is behind: dropped {len(batch)} events")

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"asgimon-sink-{self.name}"
            )

    async def aclose(self, timeout: float) -> None:
        """Deliver what is queued within ``timeout``; what is left is counted as dropped."""
        task, self._task = self._task, None
        if task is not None:
            deadline = time.monotonic() + timeout
            while (self._batches or self._delivering) and time.monotonic() < deadline:
                if task.done():
                    break
                await asyncio.sleep(0.01)
            task.cancel()
            # wait(), not await: a cancel of this caller (a shutdown deadline) propagates.
            await asyncio.wait({task})
        while self._batches:
            batch = self._batches.popleft()
            self._pending -= len(batch)
            self.dropped += len(batch)

    async def _run(self) -> None:
        while True:
            if not self._batches:
                self._ready.clear()
                await self._ready.wait()
                continue
            # Out of the queue while delivered, so offer() cannot drop it under the sink.
            batch = self._batches.popleft()
            self._pending -= len(batch)
            self._delivering = len(batch)
            try:
                async with asyncio.timeout(self.timeout):
                    await self.sink(batch)
            except asyncio.CancelledError:
                self.dropped += len(batch)
                raise
            except TimeoutError:
                self.timeouts += 1
                self.dropped += len(batch)
                self.last_error = f"no answer within {self.timeout:g} s"
                self._warn(f"subscriber {self.name!r} timed out on {len(batch)} events")
            except Exception as exc:
                self.failures += 1
                self.dropped += len(batch)
                self.last_error = repr(exc)[:300]
                self._warn(f"subscriber {self.name!r} failed: {exc!r}")
            else:
                self.delivered += len(batch)
            finally:
                self._delivering = 0

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_log >= _LOG_EVERY_S:
            self._last_log = now
            log.warning("asgimon: %s", message)

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing being delivered."""
        return not self._batches and not self._delivering

    def report(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "pending": self._pending,
            "dropped": self.dropped,
            "failures": self.failures,
            "timeouts": self.timeouts,
            "lastError": self.last_error,
        }


class Fanout:
    """The registered subscribers; :meth:`publish` never blocks and never raises."""

    def __init__(self) -> None:
        self._subs: dict[str, Subscription] = {}
        self._running = False

    def subscribe(
        self,
        sink: Sink,
        *,
        name: str | None = None,
        max_pending: int = MAX_PENDING_EVENTS,
        timeout: float = DELIVERY_TIMEOUT_S,
    ) -> Subscription:
        """Hand every stored batch's new events to ``sink`` from now on."""
        name = name or getattr(sink, "__qualname__", None) or type(sink).__name__
        if name in self._subs:
            raise ValueError(f"a subscriber named {name!r} is already registered")
        if max_pending < 1 or timeout <= 0:
            raise ValueError("max_pending must be at least 1 and timeout positive")
        sub = self._subs[name] = Subscription(name, sink, max_pending, timeout)
        if self._running:
            sub.start()
        return sub

    def publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        for sub in self._subs.values():
            try:
                sub.offer(events)
            except Exception:  # a bookkeeping bug must not reach the writer
                log.exception("asgimon: could not queue events for %r", sub.name)

    async def start(self) -> None:
        self._running = True
        for sub in self._subs.values():
            sub.start()

    async def aclose(self, timeout: float = 0.5) -> None:
        self._running = False
        deadline = time.monotonic() + timeout
        for sub in list(self._subs.values()):
            await sub.aclose(max(0.0, deadline - time.monotonic()))

    async def settled(self, timeout: float = 5.0) -> bool:
        """Wait until every subscriber has handled what it was handed (within ``timeout``);
        whether they all did."""
        for _ in range(max(1, int(timeout / 0.005))):
            if all(sub.idle for sub in self._subs.values()):
                return True
            await asyncio.sleep(0.005)
        return all(sub.idle for sub in self._subs.values())

    def report(self) -> dict[str, dict[str, Any]]:
        return {name: sub.report() for name, sub in self._subs.items()}
