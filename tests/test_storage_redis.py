"""The Redis store's write script: rollups summed per batch count every new event once."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import math
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from asgimon import ApiCall, DeploymentEvent, Event, FunctionInvocation
from asgimon.errors import StorageRejected, StorageUnavailable
from asgimon.rollups import RESOLUTIONS, Rollup, RollupKey, Window, aggregate
from asgimon.storage.redis import RedisStorage
from asgimon.storage.redis import store as redis_store

from .conftest import REDIS_URL, redis_prefix

T0 = float(1_790_000_000 // 86400 * 86400)
PROJECTS = ("p1", "p2")


@pytest.fixture
async def store() -> AsyncIterator[RedisStorage]:
    async for prefix in redis_prefix():
        backend = RedisStorage(REDIS_URL, prefix=prefix)
        await backend.start()
        try:
            yield backend
        finally:
            await backend.close()


@pytest.fixture
def small_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many script calls and encoding slices per batch, so repeats cross their boundaries."""
    monkeypatch.setattr(redis_store, "SCRIPT_EVENTS", 64)
    monkeypatch.setattr(redis_store, "SLICE_EVENTS", 16)


def mixed(n: int, seed: int) -> list[Event]:
    """Requests over two projects and three hours (with and without users, errors, zero
    durations), functions, and deployment steps that carry no value."""
    rng = random.Random(seed)
    events: list[Event] = []
    for _ in range(n):
        ts = T0 + rng.uniform(0, 3 * 3600)
        project = rng.choice(PROJECTS)
        roll = rng.random()
        if roll < 0.8:
            events.append(
                ApiCall(
                    project_id=project,
                    timestamp=ts,
                    method=rng.choice(["GET", "POST"]),
                    endpoint=rng.choice(["/a", "/b/{id}", "/c"]),
                    status=rng.choice([200, 200, 404, 500, 503]),
                    duration_ms=rng.choice([0.0, rng.lognormvariate(3, 1.2)]),
                    total_ms=1.0,
                    user_id=rng.choice([None, "u-1", "u-2"]),
                )
            )
        elif roll < 0.95:
            events.append(
                FunctionInvocation(
                    project_id=project,
                    timestamp=ts,
                    function_id=rng.choice(["f", "g"]),
                    status=rng.choice(["success", "error"]),
                    duration_ms=rng.lognormvariate(2, 1),
                )
            )
        else:
            events.append(
                DeploymentEvent(project_id=project, timestamp=ts, deployment_id="d", type="started")
            )
    return events


async def stored_rollups(store: RedisStorage) -> dict[RollupKey, Rollup]:
    found: dict[RollupKey, Rollup] = {}
    for project in PROJECTS:
        for resolution in RESOLUTIONS:
            rows = await store.rollups(Window(project, resolution, T0 - 86400, T0 + 2 * 86400))
            found.update((r.key, r) for r in rows)
    return found


async def assert_rollups_count_once(store: RedisStorage, distinct: list[Event]) -> None:
    """What Redis holds is exactly the rollups of each distinct event once."""
    want = {r.key: r for r in aggregate(distinct)}
    got = await stored_rollups(store)
    assert sorted(got) == sorted(want)
    for key, w in want.items():
        g = got[key]
        assert (g.count, g.error_count, g.value_count) == (
            w.count,
            w.error_count,
            w.value_count,
        ), key
        assert math.isclose(g.value_sum, w.value_sum, rel_tol=1e-12, abs_tol=1e-9), key
        assert (g.value_min, g.value_max) == (w.value_min, w.value_max), key
        assert g.hist == w.hist, key
    kinds = {ev.kind for ev in distinct}
    counted = {kind: await store.count(kind) for kind in kinds}
    assert counted == {kind: sum(ev.kind == kind for ev in distinct) for kind in kinds}


@pytest.mark.usefixtures("small_calls")
async def test_repeats_inside_a_batch_then_the_batch_retried_count_once(
    store: RedisStorage,
) -> None:
    events = mixed(400, seed=1)
    rng = random.Random(2)
    # The same objects again, and copies with the same ids, anywhere in the batch.
    batch = events + events[:40] + [dataclasses.replace(ev) for ev in events[40:60]]
    rng.shuffle(batch)
    first = await store.write(batch)
    assert (first.inserted, first.duplicates) == (len(events), len(batch) - len(events))
    again = await store.write(batch)
    assert (again.inserted, again.duplicates) == (0, len(batch))
    await assert_rollups_count_once(store, events)


@pytest.mark.parametrize("script_events", [None, 64])
async def test_a_partly_stored_batch_retried_adds_only_the_rest(
    store: RedisStorage, monkeypatch: pytest.MonkeyPatch, script_events: int | None
) -> None:
    if script_events is not None:
        monkeypatch.setattr(redis_store, "SCRIPT_EVENTS", script_events)
    events = mixed(1500, seed=3)
    # As if the first script calls of the batch landed before the connection dropped.
    await store.write(events[:700])
    result = await store.write(events)
    assert (result.inserted, result.duplicates) == (800, 700)
    await assert_rollups_count_once(store, events)


@pytest.mark.usefixtures("small_calls")
async def test_writers_racing_with_overlapping_batches_count_each_event_once(
    store: RedisStorage,
) -> None:
    events = mixed(1200, seed=4)
    others = [RedisStorage(REDIS_URL, prefix=store.prefix) for _ in range(2)]
    for other in others:
        await other.start()
    try:

        async def writer(target: RedisStorage, seed: int) -> int:
            mine = events[:]
            random.Random(seed).shuffle(mine)
            inserted = 0
            for i in range(0, len(mine), 150):
                inserted += (await target.write(mine[i : i + 150])).inserted
            return inserted

        counts = await asyncio.gather(*(writer(t, k) for k, t in enumerate([store, *others])))
    finally:
        for other in others:
            await other.close()
    assert sum(counts) == len(events)
    await assert_rollups_count_once(store, events)


@pytest.mark.usefixtures("small_calls")
async def test_an_event_that_cannot_be_stored_rejects_the_batch_before_anything_is_written(
    store: RedisStorage,
) -> None:
    events = mixed(300, seed=5)
    bad = ApiCall(project_id="p1", timestamp=T0, duration_ms=math.nan, total_ms=1.0)
    with pytest.raises(StorageRejected, match=bad.id):
        await store.write([*events, bad])
    assert await store.projects() == []
    assert await store.count("api_call") == 0
    assert await stored_rollups(store) == {}


async def test_writing_a_large_batch_never_holds_the_loop_for_long(store: RedisStorage) -> None:
    events = mixed(3000, seed=6)
    await store.write(events[:10])  # connected, script loaded
    gaps: list[float] = []
    done = False

    async def ticker() -> None:
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    gc.disable()  # a full collection pauses any code; that is not the store's doing
    try:
        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        await store.write(events)
        done = True
        await tick
    finally:
        gc.enable()
    # Encoding 3000 events at once would hold the loop for tens of milliseconds.
    assert max(gaps) < 0.010, f"the loop was held for {max(gaps) * 1000:.1f} ms"


@pytest.mark.usefixtures("small_calls")
async def test_the_new_events_of_a_batch_are_named_across_script_calls(
    store: RedisStorage,
) -> None:
    old = mixed(300, seed=7)
    await store.write(old[:150])
    batch = old[:]
    random.Random(8).shuffle(batch)
    result = await store.write(batch)
    assert result.inserted == 150
    assert {id(ev) for ev in result.fresh} == {id(ev) for ev in old[150:]}


async def test_events_stored_before_a_failed_script_call_are_named_on_the_error(
    store: RedisStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A batch spans several script calls; if the third fails, the first two are stored
    # and the retry will find them: the error says which were new, for the subscribers.
    monkeypatch.setattr(redis_store, "SCRIPT_EVENTS", 100)
    real = store._call
    calls = 0

    async def third_fails(op: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            op.close()
            raise StorageUnavailable("connection reset")
        return await real(op)

    monkeypatch.setattr(store, "_call", third_fails)
    events = mixed(450, seed=11)
    with pytest.raises(StorageUnavailable) as failed:
        await store.write(events)
    assert {id(ev) for ev in failed.value.stored} == {id(ev) for ev in events[:200]}
    monkeypatch.setattr(store, "_call", real)
    again = await store.write(events)
    assert {id(ev) for ev in again.fresh} == {id(ev) for ev in events[200:]}
