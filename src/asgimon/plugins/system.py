"""Process metrics: resident memory and CPU, sampled every few seconds into rollups.

A :class:`SystemSampler` reads its own process every ``interval`` seconds and hands two
:class:`SystemSample` events to the recorder's ``put``: one ``memory`` reading (resident set
size in MB, 2**20 bytes) and one ``cpu`` reading (process CPU time since the previous sample,
user and system, in % of one core: a process busy on two threads reads 200). They feed
``sys:memory:{host}/{pid}`` and ``sys:cpu:{host}/{pid}``, which the memory alert rule and
the performance page read.

One event per metric, not one per sample with both figures: the rollups (the aggregator and
the Redis script alike) take one value per event for every series it feeds, so a sample
holding both would put the CPU figure into the memory series or the other way round.

Reading is cheap enough to do on the loop. Best of 5 runs of 20,000 calls with ``timeit``
(CPython 3.11, Linux 6.18, 2 cores), per call:

    0.8 µs  ``os.pread`` of ``/proc/self/statm`` on a descriptor kept open
    5.6 µs  the same, opening the file each time
    2.3 µs  ``/proc/self/stat`` (CPU and RSS) on a descriptor kept open
    0.2 µs  ``time.process_time()``
    0.4 µs  ``os.times()``, ``resource.getrusage()``
    6.3 µs  ``psutil.Process().memory_info()``
   11.7 µs  ``psutil.Process().cpu_times()``
   23.5 µs  both psutil calls (in ``oneshot()``: 26.4 µs)

So memory comes from ``/proc/self/statm`` through a descriptor opened at :meth:`start`
(the one psutil reads too, without its overhead), CPU from ``time.process_time()``
(nanosecond resolution, all threads): about 1 µs of reading, and a whole sample with its two
events built and queued takes 7 µs (median of 20,000; p99 15 µs), far below the 0.1 ms it may
hold the loop. Where there is no ``/proc`` (macOS, Windows) memory comes from psutil if it is
installed (it is an optional dependency) and is not sampled otherwise.

>>> sampler = SystemSampler(monitor.recorder.put, interval=10.0)  # doctest: +SKIP
>>> await sampler.start()                                            # doctest: +SKIP
>>> await sampler.aclose()                                           # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from asgimon import series
from asgimon.events import Event, register
from asgimon.fields import BIG_INT, FLOAT, spec, text
from asgimon.parts import Part

log = logging.getLogger("asgimon.system")

METRICS = frozenset({"memory", "cpu"})
MB = 1024 * 1024
MAX_HOST = 253


@register
@dataclass(slots=True, kw_only=True)
class SystemSample(Event):
    """One reading of one metric of one process: ``memory`` (resident set, MB) or ``cpu``
    (% of one core since the process's previous sample)."""

    kind: ClassVar[str] = "system"
    table: ClassVar[str] = "system_metrics"

    host: str = spec("", text(MAX_HOST), required=True, ident=True)
    pid: int = spec(0, BIG_INT, required=True, high=2**32)
    process: str = spec("", text(MAX_HOST + 12), required=True, ident=True, slash=True)
    """``{host}/{pid}``: what the series and the figures are per."""
    metric: str = spec("memory", text(16), required=True, choices=METRICS)
    reading: float = spec(0.0, FLOAT, required=True, high=1e12)

    def series(self) -> str:
        return series.system(self.metric, self.process)

    def value(self) -> float:
        return self.reading


def _rss_reader() -> tuple[Callable[[], float] | None, Callable[[], None]]:
    """A reader of this process's resident set in bytes (None if none is available), and
    what closes it."""
    try:
        fd = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        pass
    else:
        page = os.sysconf("SC_PAGE_SIZE")

        def statm() -> float:
            # "size resident shared ..." in pages; one pread, no open, no Python file object.
            return float(int(os.pread(fd, 128, 0).split()[1]) * page)

        return statm, lambda: os.close(fd)
    try:
        import psutil
    except ImportError:
        log.warning("no /proc and no psutil: process memory is not sampled (pip install psutil)")
        return None, lambda: None
    info = psutil.Process().memory_info

    def rss() -> float:
        return float(info().rss)

    return rss, lambda: None


class SystemSampler:
    """Samples this process's memory and CPU every ``interval`` seconds into ``put``.

    ``put`` is the recorder's non-blocking :meth:`~asgimon.pipeline.recorder.Recorder.put`;
    ``clock`` gives the samples' timestamps (epoch seconds). The process (host and pid) is
    read at :meth:`start`, so a sampler built before a server forks its workers samples
    each worker it is started in.
    """

    def __init__(
        self,
        put: Callable[[Event], object],
        *,
        interval: float,
        project_id: str = "default",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be a positive number of seconds, not {interval!r}")
        self.interval = interval
        self.project_id = project_id
        self._put = put
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._rss: Callable[[], float] | None = None
        self._close: Callable[[], None] = lambda: None
        self._host = ""
        self._pid = 0
        self._cpu = 0.0
        self._wall = 0.0
        self._failing = False

    @property
    def process(self) -> str:
        return f"{self._host}/{self._pid}"

    async def start(self) -> None:
        if self._task is not None:
            return
        self._host = (socket.gethostname() or "localhost")[:MAX_HOST].strip() or "localhost"
        self._pid = os.getpid()
        self._rss, self._close = _rss_reader()
        self._cpu, self._wall = time.process_time(), time.perf_counter()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="asgimon-system")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.wait({task})  # a cancel of this caller still propagates
        close, self._close = self._close, lambda: None
        close()

    async def __aenter__(self) -> SystemSampler:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def sample(self) -> list[SystemSample]:
        """Read the process now, hand the readings to ``put`` and return them."""
        cpu, wall = time.process_time(), time.perf_counter()
        rss = None if self._rss is None else self._rss()
        elapsed = wall - self._wall
        cpu_percent = max(0.0, cpu - self._cpu) / elapsed * 100.0 if elapsed > 0 else 0.0
        self._cpu, self._wall = cpu, wall
        at = self._clock()
        found = [self._reading("cpu", cpu_percent, at)]
        if rss is not None:
            found.append(self._reading("memory", rss / MB, at))
        for ev in found:
            self._put(ev)
        return found

    def _reading(self, metric: str, reading: float, at: float) -> SystemSample:
        return SystemSample(
            project_id=self.project_id,
            timestamp=at,
            host=self._host,
            pid=self._pid,
            process=self.process,
            metric=metric,
            reading=reading,
        )

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += self.interval
            now = loop.time()
            if due < now:  # the loop was held past a whole interval: no burst to catch up
                due = now + self.interval
            await asyncio.sleep(due - now)
            try:
                self.sample()
            except Exception as exc:
                # Never the end of sampling: the next interval tries again.
                level = logging.DEBUG if self._failing else logging.WARNING
                log.log(level, "system metrics not sampled: %r", exc, exc_info=exc)
                self._failing = True
            else:
                self._failing = False


def integration(monitor: Any) -> Part | None:
    """The ``asgimon.integrations`` entry point: a sampler per worker process, every
    ``ANALYTICS_SYSTEM_METRICS_INTERVAL`` seconds (0: none; the kind is known either way)."""
    interval = monitor.settings.system_metrics_interval
    if not interval:
        return None
    sampler = SystemSampler(
        monitor.recorder.put, interval=interval, project_id=monitor.settings.project_id
    )
    return Part("system metrics", lambda left: sampler.aclose(), sampler.start)
