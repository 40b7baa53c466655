"""Raw API-call sampling: which calls are kept raw, on every store, with exact counts."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgimon import (
    ApiCall,
    ConfigError,
    DeploymentEvent,
    ErrorEvent,
    MemoryStorage,
    Monitor,
    Settings,
    Storage,
)
from asgimon.rollups import Window
from asgimon.sampling import KEEP_ALL, RawSampling
from asgimon.series import API_TOTAL
from asgimon.storage.redis import RedisStorage
from asgimon.testing import memory_monitor, recorded

T0 = float(1_790_000_000 // 86400 * 86400)


def calls(n: int, ts: float = T0 + 30, **fields: object) -> list[ApiCall]:
    values: dict[str, object] = {"endpoint": "/a", "duration_ms": 5.0, **fields}
    return [ApiCall(project_id="p1", timestamp=ts, **values) for _ in range(n)]  # type: ignore[arg-type]


async def api_total(storage: Storage) -> tuple[int, int]:
    rows = await storage.rollups(Window("p1", "day", T0, T0 + 86400), API_TOTAL)
    return sum(r.count for r in rows), sum(r.error_count for r in rows)


def test_the_choice_is_the_events_own_and_keeps_errors_and_slow_calls() -> None:
    sampling = RawSampling(rate=0.25, slow_ms=1000.0)
    ordinary = calls(4000)
    kept = [ev for ev in ordinary if sampling.keeps(ev)]
    assert 800 < len(kept) < 1200  # a quarter, give or take chance
    # The same id chooses alike anywhere: the choice is a function of the event.
    twins = [ApiCall(id=ev.id, endpoint="/a", duration_ms=5.0) for ev in ordinary]
    assert [sampling.keeps(ev) for ev in twins] == [sampling.keeps(ev) for ev in ordinary]
    assert all(sampling.keeps(ev) for ev in calls(200, status=503))
    assert all(sampling.keeps(ev) for ev in calls(200, duration_ms=1000.0))
    assert sampling.keeps(DeploymentEvent(deployment_id="d"))
    assert not any(RawSampling(rate=0.0).keeps(ev) for ev in ordinary)
    assert all(KEEP_ALL.keeps(ev) for ev in ordinary)
    assert KEEP_ALL.keeps_all
    with pytest.raises(ValueError, match="rate must be between 0 and 1"):
        RawSampling(rate=1.5)


async def test_every_call_is_counted_and_only_the_chosen_ones_are_listed(
    storage: Storage,
) -> None:
    sampling = RawSampling(rate=0.1, slow_ms=1000.0)
    ordinary = calls(600)
    errors = calls(30, status=500)
    slow = calls(20, duration_ms=2500.0)
    batch = [*ordinary, *errors, *slow]
    result = await storage.write(batch, sampling=sampling)
    assert (result.inserted, result.duplicates) == (650, 0)
    assert {ev.id for ev in result.fresh} == {ev.id for ev in batch}  # subscribers see all
    assert await api_total(storage) == (650, 30)
    listed = {ev.id for ev in await storage.events("api_call", limit=10_000)}
    chosen = {ev.id for ev in ordinary if sampling.keeps(ev)}
    assert 20 < len(chosen) < 110
    assert listed == chosen | {ev.id for ev in [*errors, *slow]}


async def test_a_sampled_out_call_written_again_adds_nothing(storage: Storage) -> None:
    sampling = RawSampling(rate=0.0)
    batch = calls(50)
    first = await storage.write([*batch, batch[0]], sampling=sampling)
    assert (first.inserted, first.duplicates) == (50, 1)
    again = await storage.write(batch, sampling=sampling)
    assert (again.inserted, again.duplicates, list(again.fresh)) == (0, 50, [])
    # A batch that mixes them with new ones stores only the new ones.
    mixed = await storage.write([*batch[:10], *calls(5)], sampling=sampling)
    assert (mixed.inserted, mixed.duplicates) == (5, 10)
    assert await api_total(storage) == (55, 0)
    assert await storage.events("api_call") == []


async def test_only_api_calls_are_sampled(storage: Storage) -> None:
    others = [
        DeploymentEvent(project_id="p1", timestamp=T0, deployment_id="d", type="started"),
        ErrorEvent(
            project_id="p1",
            timestamp=T0,
            error_type="KeyError",
            message="m",
            stack="",
            fingerprint="f",
            severity="high",
        ),
    ]
    await storage.write(others, sampling=RawSampling(rate=0.0))
    assert await storage.count("deployment") == 1
    assert await storage.count("error") == 1


async def test_the_purge_drops_the_ids_of_old_sampled_out_calls(storage: Storage) -> None:
    sampling = RawSampling(rate=0.0)
    old, new = calls(3, ts=T0 + 10), calls(2, ts=T0 + 2 * 86400)
    await storage.write([*old, *new], sampling=sampling)
    deleted = await storage.purge(before={"api_call": T0 + 86400}, batch_size=1)
    result = await storage.write([*old, *new], sampling=sampling)
    if isinstance(storage, RedisStorage):
        # Nothing to purge on Redis: every marker expires on its own, a window later.
        assert deleted["api_call"] == 0
        assert result.inserted == 0
        return
    assert deleted["api_call"] == 3
    # Gone: written again, the old ones count as new, the recent ones still do not.
    assert {ev.id for ev in result.fresh} == {ev.id for ev in old}


def app() -> Starlette:
    async def ok(request: object) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def boom(request: object) -> PlainTextResponse:
        return PlainTextResponse("no", status_code=502)

    return Starlette(routes=[Route("/ok", ok), Route("/boom", boom)])


async def test_the_monitor_samples_by_its_settings_and_still_counts_every_request() -> None:
    monitor = Monitor(storage=MemoryStorage(), flush_interval=0.01, api_call_sample_rate=0.0)
    wrapped = monitor.wrap(app())
    async with monitor:
        transport = httpx.ASGITransport(app=wrapped)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for _ in range(40):
                await client.get("/ok")
            for _ in range(3):
                await client.get("/boom")
        listed = await recorded(monitor, "api_call")
        assert [ev.status for ev in listed] == [502] * 3  # type: ignore[attr-defined]
        rows = await monitor.storage.rollups(Window("default", "day", 0, 2**40), API_TOTAL)
        assert sum(r.count for r in rows) == 43
        # 43 API calls, and each 502 is also an error report (ERROR_CAPTURE_STATUSES).
        assert monitor.stats().written == 46
        assert await monitor.storage.count("error") == 3


async def test_the_test_double_keeps_every_call_whatever_the_default() -> None:
    monitor = memory_monitor()
    assert monitor.recorder.sampling.keeps_all


def test_a_bad_rate_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"ANALYTICS_API_CALL_SAMPLE_RATE='2' is invalid"):
        Settings.from_env({"ANALYTICS_API_CALL_SAMPLE_RATE": "2"})
    with pytest.raises(ConfigError, match=r"ANALYTICS_SLOW_REQUEST_MS='-1' is invalid"):
        Settings.from_env({"ANALYTICS_SLOW_REQUEST_MS": "-1"})
    with pytest.raises(ConfigError, match=r"ANALYTICS_API_CALL_RAW_PER_S='-1' is invalid"):
        Settings.from_env({"ANALYTICS_API_CALL_RAW_PER_S": "-1"})
