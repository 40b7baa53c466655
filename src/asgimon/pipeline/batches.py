"""Writing a batch the recorder made: retries with backoff, refusals bisected, the ledger
kept, cancellation undone, and the stored events handed to the subscribers.

A part of :class:`~asgimon.pipeline.recorder.Recorder` (its base class), kept apart so that
the recorder's own module holds its queue, its task and the making of batches.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from asgimon.errors import StorageError, StorageFull, StorageRejected
from asgimon.events import Event
from asgimon.pipeline.counted import Counted
from asgimon.pipeline.sinks import Fanout
from asgimon.sampling import KEEP_ALL, RawSampling
from asgimon.storage.base import Storage, WriteResult

log = logging.getLogger("asgimon.recorder")

_LOG_EVERY_S = 10.0
_FULL_ATTEMPTS = 3


class BatchWriter:
    """The recorder's writing of batches; its state is the recorder's."""

    storage: Storage
    sampling: RawSampling
    sinks: Fanout
    retry_backoff_max: float
    retry_deadline: float
    _queue: deque[Any]
    _sizes: deque[int]
    _bytes: int
    _in_flight: int
    _written: int
    _duplicates: int
    _retries: int
    _batches: int
    _internal_errors: int
    _dropped: dict[str, int]
    _last_error: str | None
    _last_error_at: float | None
    _last_log: dict[str, float]
    _stop_by: float | None
    _stopped: bool
    _first_backoff: float
    _backoff: float
    _failing: bool
    _carry: list[Counted]
    _current: tuple[asyncio.Task[Any] | None, list[Event], Counted | None, set[int]] | None
    _lock: threading.Lock
    _counts: bool
    """Whether the calls sampling does not keep are counted (see :mod:`.counted`)."""

    def count_internal_error(self, exc: BaseException, what: str) -> None:
        self._internal_errors += 1
        self._warn("internal_error", f"internal error in {what}: {exc!r}", exc=exc)

    def _past_stop(self) -> bool:
        return self._stop_by is not None and time.monotonic() >= self._stop_by

    async def _store(
        self,
        batch: list[Event],
        sizes: list[int],
        back: list[tuple[Any, int]],
        counted: Counted | None,
        settled: set[int],
    ) -> None:
        """Write a batch; cancelled, what is not settled goes back to be written again."""
        self._current = (asyncio.current_task(), batch, counted, settled)
        try:
            await self._write(batch, settled, counted)
        except asyncio.CancelledError:
            if counted is not None and id(counted) not in settled:
                if self._stopped:
                    self._settle_counted(counted, "shutdown_timeout", settled)
                else:
                    # Under its marker: if the write did commit, the retry adds nothing.
                    self._carry.append(counted)
            self._put_back(list(zip(batch, sizes, strict=True)) + back, settled)
            raise
        finally:
            self._current = None

    def _put_back(self, items: list[tuple[Any, int]], settled: set[int]) -> None:
        back = [(ev, sz) for ev, sz in items if id(ev) not in settled]
        if self._stopped:
            # stop() has already settled the queue: these are lost to the shutdown.
            if back:
                self._settle([], "shutdown_timeout", settled, count=len(back))
            settled.update(id(ev) for ev, _ in back)
            return
        # Put back what is not settled: if the write did commit, the store is idempotent
        # and a later attempt counts those events as duplicates, once.
        with self._lock:
            for ev, sz in reversed(back):
                self._queue.appendleft(ev)
                self._sizes.appendleft(sz)
                self._bytes += sz
            self._in_flight -= len(back)

    async def _write(
        self, batch: list[Event], settled: set[int], counted: Counted | None = None
    ) -> None:
        if not batch and counted is None:
            return
        # The recorder chose which API calls are kept raw (the rest are counted): the
        # store keeps every event it is given.
        sampling = KEEP_ALL if self._counts else self.sampling
        options: dict[str, Any] = {"sampling": sampling}
        if counted is not None:
            options["counted"] = counted
        started = time.monotonic()
        attempts = 0
        while True:
            if self._failing:
                # The backoff belongs to the store, not to the batch: a new batch does not
                # start hammering a store that failed the last one.
                await self._sleep(self._backoff * (0.5 + random.random()))
                self._backoff = min(self._backoff * 2, self.retry_backoff_max)
            attempts += 1
            try:
                result = await self.storage.write(batch, **options)
            except StorageRejected as exc:
                self._failing = False
                if counted is None:
                    await self._bisect(batch, exc, settled)
                elif not batch:
                    self._note_error(exc)
                    self._settle_counted(counted, "invalid", settled)
                    self._warn("invalid", f"storage rejected counted calls, dropped them: {exc}")
                else:
                    # Apart, so that only what the store refuses is dropped.
                    await self._write([], settled, counted)
                    await self._write(batch, settled)
                return
            except StorageError as exc:
                if exc.stored:
                    self._publish(WriteResult(len(exc.stored), 0, exc.stored))
                self._failing = True
                self._note_error(exc)
                out_of_time = time.monotonic() + self._backoff - started > self.retry_deadline
                gave_up = isinstance(exc, StorageFull) and attempts >= _FULL_ATTEMPTS
                if out_of_time or gave_up or self._past_stop():
                    self._settle(batch, exc.reason, settled)
                    if counted is not None:
                        self._settle_counted(counted, exc.reason, settled)
                    n = len(batch) + (counted.count if counted is not None else 0)
                    self._warn(exc.reason, f"storage failed, dropped {n} events: {exc}")
                    return
                self._retries += 1
                continue
            except Exception as exc:
                self._settle(batch, "internal_error", settled)
                if counted is not None:
                    self._settle_counted(counted, "internal_error", settled)
                self.count_internal_error(exc, "storage.write")
                return
            self._failing = False
            self._backoff = self._first_backoff
            self._publish(result)
            if counted is not None and result.counted and counted.events:
                self._publish(WriteResult(0, 0, counted.events))
            # Events stop() already gave up on (a write that finished after all) stay counted
            # where they are: each event is in exactly one column of the ledger.
            open_ = sum(1 for ev in batch if id(ev) not in settled)
            written = min(result.inserted, open_)
            counted_open = counted is not None and id(counted) not in settled
            with self._lock:
                self._written += written
                self._duplicates += open_ - written
                self._in_flight -= open_
                if counted is not None and counted_open:
                    self._written += result.counted
                    self._duplicates += counted.count - result.counted
                    self._in_flight -= counted.count
                self._batches += 1
            settled.update(map(id, batch))
            if counted is not None:
                settled.add(id(counted))
            return

    async def write_through(self, events: Sequence[Event]) -> WriteResult:
        """Store ``events`` now, past the queue, and hand the new ones to the subscribers.

        For callers that answer only once their events are stored (``POST /api/events``):
        a failure is raised to them, not retried, and they are not in the queue's ledger.
        """
        result = await self.storage.write(events, sampling=self.sampling)
        self._publish(result)
        return result

    def _publish(self, result: WriteResult) -> None:
        try:
            self.sinks.publish(result.fresh)
        except Exception as exc:  # the ledger and the write stand whatever a subscriber does
            self.count_internal_error(exc, "handing stored events to subscribers")

    async def _bisect(self, batch: list[Event], exc: StorageRejected, settled: set[int]) -> None:
        """Find the poison events by halving, so only they are dropped."""
        if len(batch) == 1:
            self._note_error(exc)
            self._settle(batch, "invalid", settled)
            self._warn("invalid", f"storage rejected an event, dropped it: {exc}")
            return
        mid = len(batch) // 2
        await self._write(batch[:mid], settled)
        await self._write(batch[mid:], settled)

    def _settle_counted(self, counted: Counted, reason: str, settled: set[int]) -> None:
        if id(counted) in settled:
            return
        with self._lock:
            self._dropped[reason] += counted.count
            self._in_flight -= counted.count
        settled.add(id(counted))

    def _settle(self, batch: list[Event], reason: str, settled: set[int], count: int = 0) -> None:
        """Count in-flight events as dropped for ``reason`` (those not settled already)."""
        n = count or sum(1 for ev in batch if id(ev) not in settled)
        with self._lock:
            self._dropped[reason] += n
            self._in_flight -= n
        settled.update(map(id, batch))

    async def _sleep(self, seconds: float) -> None:
        if self._stop_by is not None:
            seconds = max(0.0, min(seconds, self._stop_by - time.monotonic()))
        await asyncio.sleep(seconds)

    def _note_error(self, exc: BaseException) -> None:
        self._last_error = str(exc)[:500]
        self._last_error_at = time.time()

    def _warn(self, key: str, message: str, exc: BaseException | None = None) -> None:
        """Log at most once per ten seconds per kind of trouble, so an outage cannot flood logs."""
        now = time.monotonic()
        if now - self._last_log.get(key, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._last_log[key] = now
            log.warning("asgimon: %s", message, exc_info=exc)
