"""The recorder: a bounded in-memory queue drained in batches by one background task.

The request path only appends to a deque (``put_record``): no I/O, no lock, no await. A background
task wakes every ``flush_interval`` seconds, or as soon as a batch is full, and writes
batches to storage with retries and backoff. Every event ends up in exactly one of the
ledger's columns: ``written``, ``duplicates`` (already stored by an earlier attempt),
``dropped[reason]`` or, until the next flush, ``pending``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from threading import get_ident
from typing import Any, cast

from asgimon._slices import CHECK_EVERY, Slicer
from asgimon.events import ApiCall, Event
from asgimon.pipeline.batches import BatchWriter
from asgimon.pipeline.counted import Counted, RawBudget, Tally, markers, sampler
from asgimon.pipeline.sinks import Fanout
from asgimon.sampling import KEEP_ALL, RawSampling
from asgimon.storage.base import Storage

log = logging.getLogger("asgimon.recorder")

DROP_REASONS = (
    "queue_full",
    "storage_unavailable",
    "storage_full",
    "invalid",
    "shutdown_timeout",
    "internal_error",
)
API_CALL_SIZE = 400  # bytes a queued request record holds, roughly; for the byte cap
STOP_MARGIN_S = 0.5


@dataclass(frozen=True, slots=True)
class RecorderStats:
    """A snapshot of the ledger. ``recorded == written + duplicates + dropped_total + pending``."""

    recorded: int
    written: int
    duplicates: int
    pending: int
    pending_bytes: int
    dropped: dict[str, int]
    retries: int
    batches: int
    internal_errors: int
    last_error: str | None
    last_error_at: float | None
    running: bool
    dropped_total: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dropped_total", sum(self.dropped.values()))


class Recorder(BatchWriter):
    """Owns the queue and the flush task. Built by :class:`~asgimon.Monitor`."""

    def __init__(
        self,
        storage: Storage,
        *,
        max_events: int = 100_000,
        max_bytes: int = 64 * 1024 * 1024,
        batch_size: int = 1000,
        flush_interval: float = 1.0,
        shutdown_timeout: float = 5.0,
        retry_backoff_max: float = 5.0,
        retry_deadline: float = 30.0,
        convert: Callable[[Any], Event] = lambda item: item,
        sampling: RawSampling = KEEP_ALL,
        series_of: Callable[[tuple[Any, ...]], tuple[str, str]] | None = None,
        raw_per_s: int = 0,
    ) -> None:
        self.storage = storage
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.shutdown_timeout = shutdown_timeout
        self.retry_backoff_max = retry_backoff_max
        self.retry_deadline = retry_deadline
        self._convert = convert
        self.sampling = sampling
        """Which API calls are stored raw (every event feeds the rollups)."""
        self._series_of = series_of
        """The project and series of a middleware record: with it, the calls sampling does
        not keep are counted straight from their records (see :mod:`.counted`)."""
        self._counts = series_of is not None and not sampling.keeps_all
        self._marker = markers()
        self._draw = sampler()
        self._budget = RawBudget(raw_per_s)
        """The ordinary calls kept raw a second, at most (0: no bound)."""
        # Counted calls whose write was cancelled: written, under their marker, before
        # anything else (put back in the queue as events, they would be counted twice).
        self._carry: list[Counted] = []
        self.sinks = Fanout()
        """Who receives each stored batch's new events: see :mod:`asgimon.pipeline.sinks`."""
        self._queue: deque[Any] = deque()
        self._sizes: deque[int] = deque()
        self._bytes = 0
        # The middleware's records, queued from the loop's thread alone: apart from the
        # events, which any thread may record, so that queueing one takes no lock. Each
        # counts API_CALL_SIZE towards the byte cap.
        self._records: deque[tuple[Any, ...]] = deque()
        self._records_in = 0
        self._in_flight = 0
        self._recorded = 0
        self._written = 0
        self._duplicates = 0
        self._retries = 0
        self._batches = 0
        self._internal_errors = 0
        self._dropped = dict.fromkeys(DROP_REASONS, 0)
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._last_log: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._loop_thread: int | None = None
        self._stop_by: float | None = None
        self._stopped = False
        self._first_backoff = min(0.05, retry_backoff_max)
        self._backoff = self._first_backoff
        self._failing = False
        self._current: (
            tuple[asyncio.Task[Any] | None, list[Event], Counted | None, set[int]] | None
        ) = None
        self._flush_lock = asyncio.Lock()
        # Trackers in sync code may record from a thread pool; the counters must stay exact.
        self._lock = threading.Lock()

    # -- the request path ------------------------------------------------------------

    def put(self, item: Any, size: int = API_CALL_SIZE) -> bool:
        """Queue an event (or a raw request record); never blocks, never raises.

        Returns False when the event was dropped because the queue is full.
        """
        with self._lock:
            self._recorded += 1
            if self._queued() >= self.max_events or self._held() + size > self.max_bytes:
                self._dropped["queue_full"] += 1
                self._warn("queue_full", "queue full: dropping events")
                return False
            self._queue.append(item)
            self._sizes.append(size)
            self._bytes += size
        if (
            self._queued() >= self.batch_size
            and self._wake is not None
            and threading.get_ident() == self._loop_thread
        ):
            self._wake.set()
        return True

    def put_record(self, record: tuple[Any, ...]) -> bool:
        """Queue a middleware record, as :meth:`put`.

        Every request of the host passes here: on the event loop's thread it takes no lock,
        as only that thread touches the records' deque and their count. (A test client may
        serve the app from a thread of its own: that one takes :meth:`put`'s way.)
        """
        if get_ident() != self._loop_thread:
            return self.put(record)
        records = self._records
        self._records_in += 1
        queued = len(records) + len(self._queue)
        held = self._bytes + (len(records) + 1) * API_CALL_SIZE  # as _held(), one call fewer
        if queued >= self.max_events or held > self.max_bytes:
            with self._lock:
                self._dropped["queue_full"] += 1
            self._warn("queue_full", "queue full: dropping events")
            return False
        records.append(record)
        if queued + 1 >= self.batch_size and self._wake is not None:
            self._wake.set()
        return True

    def _queued(self) -> int:
        return len(self._queue) + len(self._records)

    def _held(self) -> int:
        """Bytes queued, by the estimates the byte cap counts in."""
        return self._bytes + len(self._records) * API_CALL_SIZE

    def reject(self, reason: str, exc: BaseException) -> None:
        """An event was recorded but could not be queued: count it as ``dropped[reason]``."""
        with self._lock:
            self._recorded += 1
            self._dropped[reason] += 1
        if reason == "internal_error":
            self.count_internal_error(exc, "recording")
        else:
            self._warn(reason, f"dropped an event ({reason}): {exc}")

    # -- lifecycle -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        if self.running:
            return
        self._stop_by = None
        self._stopped = False
        self._wake = asyncio.Event()
        self._loop_thread = threading.get_ident()
        self._task = asyncio.create_task(self._run(), name="asgimon-recorder")

    async def stop(self, timeout: float | None = None) -> None:
        """Flush what is queued within ``timeout`` (default ``shutdown_timeout``), then stop.

        Whatever could not be written in time is counted as ``dropped[shutdown_timeout]``.
        """
        timeout = self.shutdown_timeout if timeout is None else timeout
        task = self._task
        if task is None:
            return
        self._stop_by = time.monotonic() + timeout
        if self._wake is not None:
            self._wake.set()
        try:
            # The flush loop honours _stop_by itself; this covers a write that hangs.
            await asyncio.wait_for(asyncio.shield(task), timeout + STOP_MARGIN_S)
        except TimeoutError:
            task.cancel()
            # A write stuck in a hung driver may take a while to unwind; don't wait for it.
            await asyncio.wait({task}, timeout=STOP_MARGIN_S)
            if not task.done():
                self._abandon_current(task)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            self._task = None
            self._stopped = True
            # In-flight batches are not counted here: a cancelled one was put back in the
            # queue, and one written by a concurrent flush() settles its own events.
            with self._lock:
                carried = sum(c.count for c in self._carry)
                self._in_flight -= carried
                self._carry.clear()
                left = self._queued() + carried
                self._dropped["shutdown_timeout"] += left
                self._queue.clear()
                self._sizes.clear()
                self._bytes = 0
                self._records.clear()
            if left:
                log.warning("asgimon: flush timed out at shutdown, dropped %d events", left)

    def _abandon_current(self, task: asyncio.Task[None]) -> None:
        """The flush task is stuck in a write: its batch is lost to the shutdown.

        Marked settled here, so that if the write unwinds later it is not counted twice.
        """
        current = self._current
        if current is None or current[0] is not task:
            return
        _, batch, counted, settled = current
        self._settle([ev for ev in batch if id(ev) not in settled], "shutdown_timeout", settled)
        if counted is not None:
            self._settle_counted(counted, "shutdown_timeout", settled)

    async def flush(self, *, full_batches_only: bool = False) -> None:
        """Write everything queued now (used by tests and at shutdown)."""
        async with self._flush_lock:
            while self._carry:
                if self._past_stop():
                    return
                await self._store([], [], [], self._carry.pop(0), set())
            while self._queued() >= (self.batch_size if full_batches_only else 1):
                if self._past_stop():
                    return  # stop() counts what is left; no more attempts past its deadline
                await self._flush_batch()
                # A store that never suspends (memory) must not chain batches into one
                # stretch of the loop.
                await asyncio.sleep(0)

    # -- the background task ---------------------------------------------------------

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            partial_too = True
            if self._stop_by is None:
                try:
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval)
                    # Woken by a full batch: write full batches only, and leave what trickles
                    # in meanwhile for the tick, or steady traffic makes many tiny ones.
                    partial_too = False
                except TimeoutError:
                    pass
                self._wake.clear()
            try:
                await self.flush(full_batches_only=not partial_too)
            except Exception as exc:  # a bug here must not kill the loop
                self.count_internal_error(exc, "flush")
            if self._stop_by is not None and (not self._queued() or self._past_stop()):
                return

    def _tally(self) -> Tally | None:
        if self._series_of is None or not self._counts:
            return None
        # With series_of given, the converter is the middleware's: it makes API calls.
        convert = cast(Callable[[Any], ApiCall], self._convert)
        return Tally(self.sampling, self._series_of, convert, self._draw, self._budget)

    async def _flush_batch(self) -> None:
        with self._lock:
            n = min(self.batch_size, len(self._queue))
            items: list[Any] = [self._queue.popleft() for _ in range(n)]
            sizes = [self._sizes.popleft() for _ in range(n)]
            self._bytes -= sum(sizes)
            records = self._records
            more = min(self.batch_size - n, len(records))
            items += [records.popleft() for _ in range(more)]
            sizes += [API_CALL_SIZE] * more
            n += more
            self._in_flight += n
        slicer = Slicer()
        batch: list[Event] = []
        kept_sizes: list[int] = []
        failed: set[int] = set()  # positions whose conversion failed (and was counted)
        tally = self._tally()
        take = None if tally is None else tally.take
        keeps, convert = self.sampling.keeps, self._convert
        try:
            # In slices: a thousand request records are milliseconds of Python.
            for start in range(0, n, CHECK_EVERY):
                for i in range(start, min(start + CHECK_EVERY, n)):
                    item = items[i]
                    try:
                        if isinstance(item, Event):
                            if tally is not None and isinstance(item, ApiCall) and not keeps(item):
                                tally.take_event(item)
                                continue
                        elif take is None or not take(item):
                            item = convert(item)
                        else:
                            continue  # counted
                        batch.append(item)
                        kept_sizes.append(sizes[i])
                    except Exception as exc:
                        failed.add(i)
                        self._settle([], "internal_error", set(), count=1)
                        self.count_internal_error(exc, "converting a request record")
                if slicer.due():
                    await slicer.pause()
            counted = None
            if tally is not None:
                counted = await tally.counted(self._marker(), time.time(), slicer)
                if tally.error is not None:
                    self._settle([], "internal_error", set(), count=tally.failed)
                    self.count_internal_error(tally.error, "counting request records")
            slicer.mark()
        except asyncio.CancelledError:
            # Nothing is written yet: the records go back as they came, to be made again.
            self._put_back([(items[i], sizes[i]) for i in range(n) if i not in failed], set())
            raise
        await self._store(batch, kept_sizes, [], counted, set())

    # -- reporting -------------------------------------------------------------------

    def stats(self) -> RecorderStats:
        return RecorderStats(
            recorded=self._recorded + self._records_in,
            written=self._written,
            duplicates=self._duplicates,
            pending=self._queued() + self._in_flight,
            pending_bytes=self._held(),
            dropped=dict(self._dropped),
            retries=self._retries,
            batches=self._batches,
            internal_errors=self._internal_errors,
            last_error=self._last_error,
            last_error_at=self._last_error_at,
            running=self.running,
        )
