"""Helpers for asserting on what asgimon recorded, in a host app's own tests.

>>> monitor = Monitor(storage=MemoryStorage())              # doctest: +SKIP
>>> async with monitor:                                       # doctest: +SKIP
...     await client.get("/items/1")
...     calls = await recorded(monitor, "api_call")
...     assert calls[0].endpoint == "/items/{id}"
"""

from __future__ import annotations

from .events import Event
from .monitor import Monitor
from .storage.memory import MemoryStorage

__all__ = ["MemoryStorage", "drain", "memory_monitor", "recorded"]


def memory_monitor(**overrides: object) -> Monitor:
    """A Monitor on a fresh in-memory store, flushing every 10 ms, every API call kept raw."""
    overrides.setdefault("flush_interval", 0.01)
    overrides.setdefault("api_call_sample_rate", 1.0)
    return Monitor(storage=MemoryStorage(), **overrides)  # type: ignore[arg-type]


async def drain(monitor: Monitor) -> None:
    """Write everything the monitor has queued, so queries see it."""
    await monitor.recorder.flush()


async def recorded(monitor: Monitor, kind: str, *, project_id: str | None = None) -> list[Event]:
    """Every stored event of one kind (``api_call``, ``deployment``, ``build``, ``function``,
    ``domain``, ``error``), oldest first, after draining the queue."""
    await drain(monitor)
    found = await monitor.storage.events(kind, project_id=project_id, limit=1_000_000)
    return found[::-1]
