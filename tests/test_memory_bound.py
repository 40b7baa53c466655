"""A long storage outage at a high event rate: memory plateaus at the queue's cap (F33)."""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from typing import Any

import psutil
import pytest

from asgimon import Event, MemoryStorage, Monitor, StorageUnavailable, WriteResult


class DownStorage(MemoryStorage):
    async def write(self, events: Sequence[Event], **options: Any) -> WriteResult:
        raise StorageUnavailable("connection refused")


@pytest.mark.slow
async def test_an_outage_never_grows_memory_past_the_queue_cap() -> None:
    cap_events = 20_000
    monitor = Monitor(
        storage=DownStorage(),
        queue_max_events=cap_events,
        flush_interval=0.01,
        retry_deadline=0.2,
        retry_backoff_max=0.05,
    )
    process = psutil.Process()
    now = time.time()
    async with monitor:
        gc.collect()
        before = process.memory_info().rss
        samples = []
        for round_ in range(15):
            for i in range(10_000):
                await monitor.record_domain_event(f"d{i}.example.com", "added", timestamp=now)
            samples.append(process.memory_info().rss - before)
            if round_ % 5 == 0:
                await monitor.recorder.flush()
    stats = monitor.stats()
    grown_mb = max(samples) / 2**20
    # The events a full queue holds, plus the allowance RELIABILITY.md gives (32 MB).
    assert grown_mb < 32 + cap_events * 2_000 / 2**20, samples
    assert stats.pending == 0
    assert stats.recorded == 150_000
    assert stats.dropped["queue_full"] > 0
    assert stats.dropped["queue_full"] + stats.dropped["storage_unavailable"] == 150_000
    assert stats.recorded == stats.written + stats.dropped_total
