"""The system-metrics plugin: the sampler's readings of its own process, stored and rolled up
on every backend, read by the memory alert and shown on the performance API and page."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import statistics
import time
from collections.abc import Sequence
from typing import Any

import httpx
import psutil
import pytest
from starlette.applications import Starlette

from asgimon import MemoryStorage, Monitor, Storage
from asgimon.alerts.measure import StorageReader, memory
from asgimon.alerts.rules import AlertRule
from asgimon.dashboard.schemas import RESPONSES
from asgimon.events import Event
from asgimon.plugins.system import MB, SystemSample, SystemSampler
from asgimon.rollups import Window

MINUTE_OF = int(time.time()) // 60 * 60
NOW = MINUTE_OF + 20.0  # the samples of a minute stay in it, the next ones go to the next


def rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / MB


def by_metric(events: Sequence[Event], metric: str) -> list[SystemSample]:
    return [ev for ev in events if isinstance(ev, SystemSample) and ev.metric == metric]


async def test_the_sampler_reads_its_process_every_interval() -> None:
    got: list[Event] = []
    sampler = SystemSampler(got.append, interval=0.05, project_id="shop")
    async with sampler:
        await asyncio.sleep(0.53)
        reading, expected = sampler.sample(), rss_mb()
    memory_samples, cpu_samples = by_metric(got, "memory"), by_metric(got, "cpu")
    # Ten intervals, give or take a busy machine's timer, then the explicit sample.
    assert 8 <= len(memory_samples) <= 12
    assert len(cpu_samples) == len(memory_samples)
    steps = [b.timestamp - a.timestamp for a, b in itertools.pairwise(memory_samples)]
    assert statistics.median(steps) == pytest.approx(0.05, abs=0.015)
    process = f"{socket.gethostname()}/{os.getpid()}"
    for ev in memory_samples + cpu_samples:
        ev.validate()
        assert (ev.project_id, ev.host, ev.pid, ev.process) == (
            "shop",
            socket.gethostname(),
            os.getpid(),
            process,
        )
    assert {ev.series() for ev in reading} == {f"sys:memory:{process}", f"sys:cpu:{process}"}
    # The resident set as psutil reads it, in MB.
    assert by_metric(reading, "memory")[0].reading == pytest.approx(expected, rel=0.05)
    assert all(ev.reading == pytest.approx(expected, rel=0.05) for ev in memory_samples)


async def test_cpu_percent_follows_the_process_busy_in_a_thread() -> None:
    me = psutil.Process()

    def cpu_s() -> float:
        t = me.cpu_times()
        return float(t.user + t.system)

    def burn() -> None:
        # 0.3 s of CPU, however long a crowded machine takes to give it.
        until = time.thread_time() + 0.3
        while time.thread_time() < until:
            pass

    sampler = SystemSampler(lambda ev: None, interval=3600)
    async with sampler:
        await asyncio.sleep(0.3)  # the loop idle
        idle = by_metric(sampler.sample(), "cpu")[0].reading
        before, started = cpu_s(), time.perf_counter()
        await asyncio.to_thread(burn)
        busy = by_metric(sampler.sample(), "cpu")[0].reading
        after, ended = cpu_s(), time.perf_counter()
    # What psutil saw over the same stretch (in clock ticks: 10 ms steps over 0.3 s).
    seen = (after - before) / (ended - started) * 100
    assert idle < 20
    assert busy > idle + 30
    assert busy == pytest.approx(seen, abs=10)


async def test_aclose_stops_sampling_at_once(loop_errors: list[dict[str, Any]]) -> None:
    got: list[Event] = []
    sampler = SystemSampler(got.append, interval=0.02)
    await sampler.start()
    await asyncio.sleep(0.1)
    started = time.perf_counter()
    await sampler.aclose()
    took = time.perf_counter() - started
    after = len(got)
    await asyncio.sleep(0.1)
    assert after > 0
    assert took < 1.0  # it cancels, it does not wait for the next sample
    assert len(got) == after  # nothing sampled once closed
    await sampler.aclose()  # a second close is nothing
    assert loop_errors == []

    idle = SystemSampler(got.append, interval=3600)
    await idle.start()
    started = time.perf_counter()
    await idle.aclose()  # mid-way through an hour's wait
    assert time.perf_counter() - started < 0.05


async def test_a_failing_sample_does_not_end_sampling(caplog: pytest.LogCaptureFixture) -> None:
    got: list[Event] = []

    def put(ev: Event) -> None:
        if not got:
            got.append(ev)
            raise RuntimeError("queue on fire")
        got.append(ev)

    with caplog.at_level(logging.WARNING, logger="asgimon.system"):
        async with SystemSampler(put, interval=0.02):
            await asyncio.sleep(0.15)
    assert len(got) > 2
    assert "system metrics not sampled: RuntimeError('queue on fire')" in caplog.text


def test_the_sampler_wants_a_positive_interval() -> None:
    with pytest.raises(ValueError, match="interval must be a positive number of seconds"):
        SystemSampler(print, interval=0)


def sample(process: str, metric: str, reading: float, at: float = NOW) -> SystemSample:
    host, _, pid = process.rpartition("/")
    return SystemSample(
        project_id="p",
        timestamp=at,
        host=host,
        pid=int(pid),
        process=process,
        metric=metric,
        reading=reading,
    )


async def test_samples_are_stored_and_rolled_up_per_process(storage: Storage) -> None:
    web, worker = "web-1/100", "web-1/200"
    events = [
        sample(web, "memory", 100.0),
        sample(web, "memory", 120.0, NOW + 10),
        sample(web, "memory", 140.0, NOW + 20),
        sample(web, "cpu", 10.0),
        sample(web, "cpu", 30.0, NOW + 10),
        sample(worker, "memory", 500.0, NOW + 65),  # the next minute
        sample(worker, "cpu", 150.0, NOW + 65),  # two cores busy
    ]
    first = await storage.write(events)
    again = await storage.write(events[:2])
    assert (first.inserted, again.inserted, again.duplicates) == (7, 0, 2)

    stored = await storage.events("system", project_id="p")
    # Every field back as written (host, pid, process, metric, reading), as a SystemSample.
    assert {ev.id: ev for ev in stored} == {ev.id: ev for ev in events}

    for resolution in ("minute", "hour", "day"):
        window = Window("p", resolution, MINUTE_OF - 86_400, MINUTE_OF + 86_400)
        rows = await storage.series_rollups(window, "sys:memory:")
        figures = [(r.series, r.count, r.avg, r.value_min, r.value_max) for r in rows]
        assert figures == [
            ("sys:memory:web-1/100", 3, 120.0, 100.0, 140.0),
            ("sys:memory:web-1/200", 1, 500.0, 500.0, 500.0),
        ], resolution
        cpu = await storage.series_rollups(window, "sys:cpu:")
        assert [(r.series, r.avg) for r in cpu] == [
            ("sys:cpu:web-1/100", 20.0),
            ("sys:cpu:web-1/200", 150.0),
        ], resolution

    # The memory alert judges the worst process, in MB.
    rule = AlertRule(id="r", project_id="p", name="mem", type="memory", threshold=400, window=600)
    found = await memory(rule, StorageReader(storage), NOW + 70)
    assert (found.value, found.breached, found.labels) == (500.0, True, {"process": worker})


async def test_samples_are_purged_by_their_retention(storage: Storage) -> None:
    old, recent = sample("h/1", "memory", 80.0, NOW - 40 * 86_400), sample("h/1", "cpu", 5)
    await storage.write([old, recent])
    deleted = await storage.purge(before={"system": NOW - 30 * 86_400})
    assert deleted["system"] == 1
    left = await storage.events("system", project_id="p")
    assert [(ev.id, ev.timestamp) for ev in left] == [(recent.id, recent.timestamp)]
    assert SystemSample.retention == "metrics_retention_days"


async def test_the_performance_api_and_page_show_each_process() -> None:
    monitor = Monitor(storage=MemoryStorage(), flush_interval=0.01, project_id="shop")
    app = monitor.wrap(Starlette())
    transport = httpx.ASGITransport(app, client=("127.0.0.1", 1))
    async with monitor, httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        empty = await c.get("/analytics/api/performance/shop?range=1h")
        async with SystemSampler(monitor.recorder.put, interval=0.02, project_id="shop"):
            await asyncio.sleep(0.15)
        expected = rss_mb()
        await monitor.recorder.flush()
        # A range of its own: the answer without samples may be cached.
        answer = await c.get("/analytics/api/performance/shop?range=24h")
        page = await c.get("/analytics/performance?project=shop&range=24h")
    assert empty.status_code == 200, empty.text
    assert empty.json()["system"] == []
    assert answer.status_code == 200, answer.text
    [process] = answer.json()["system"]
    assert process["process"] == f"{socket.gethostname()}/{os.getpid()}"
    assert process["memoryAvgMb"] == pytest.approx(expected, rel=0.05)
    assert process["memoryMaxMb"] >= process["memoryAvgMb"]
    assert 0 <= process["cpuAvgPercent"] <= process["cpuMaxPercent"]
    documented = RESPONSES["performance"]["properties"]["system"]["items"]["properties"]
    assert set(process) == set(documented)
    assert page.status_code == 200, page.text
    assert "<h2>System</h2>" in page.text
    assert f"<td>{process['process']}</td>" in page.text
    assert f"{process['memoryMaxMb']:,.1f} MB" in page.text
