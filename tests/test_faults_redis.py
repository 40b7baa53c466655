"""Redis event-store faults F01-F07 under request load (RELIABILITY.md).

Every fault runs on a private ``redis-server`` that this module starts on a free loopback
port (``tests/redis_server.py``), never on the machine's shared Redis, and every test gets a
server of its own. Each test drives a small Starlette app twice through
``httpx.ASGITransport``: once against the healthy server (the control) and once under the
fault. For every fault it checks what "correct" means there:

* (i) the host's status histogram and response bodies equal the control run's, and no
  request waited on the store (it is not on the request path);
* (ii) the ledger balances: ``recorded == written + duplicates + dropped``, nothing pending,
  and what Redis holds is exactly what was counted, each event once (one idempotency marker
  per stored event, rollups counting each stored request once);
* the drop reasons are the expected ones, and nothing else;
* (iv) once the fault is healed, new events persist within 10 s with nobody flushing;
* (vi) no task or callback exception reached the event loop, and no internal error was counted.

Redis keeps no data here (``--save "" --appendonly no``): a server killed or restarted comes
back empty, so what it holds afterwards is what was written since.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp

from asgimon import Monitor
from asgimon.events import Event
from asgimon.storage.base import WriteResult
from asgimon.storage.redis import SEP, RedisStorage

from . import fault_load
from .fault_load import (
    EXPECTED_EVENTS,
    N_REQUESTS,
    RECOVERY_BOUND_S,
    RECOVERY_INDICES,
    RECOVERY_REQUESTS,
    LoadResult,
    all_ids,
    assert_ledger_balances,
    drain,
    drive,
    expected_rollups,
    host_app,
    local_client,
    monitor_settings,
)
from .pg_cluster import FaultProxy, ProxyMode, free_port, skip_or_fail
from .redis_server import RedisServer, missing_binary

pytestmark = pytest.mark.slow

HOST_LATENCY_BOUND_S = 0.5  # no request waits on the store: not even one socket timeout
STORE_TIMEOUT_S = 1.0  # RELIABILITY.md: the Redis event store's socket timeouts
# An attempt's time is the loop's too: the test's own load shares it, and on a machine half
# as fast a healthy two-round-trip write through the 0.15 s proxy was seen taking 1.99 s.
# A write that ignored its socket timeout would show as one attempt far past this bound.
ATTEMPT_MARGIN_S = 1.5
PREFIX = "t"

# Requests that only hit /items (i % 10 == 0): one event each, all 200.
WARM_INDICES = range(20_000, 20_100, 10)
WARM_ERROR = 20_107  # a 500: an API call and an error report


# -- load -----------------------------------------------------------------------------------


async def health(app: ASGIApp) -> tuple[httpx.Response, float]:
    """``/analytics/api/health`` and how long it took to answer."""
    async with local_client(app) as admin:
        t0 = time.monotonic()
        response = await admin.get("/analytics/api/health")
        return response, time.monotonic() - t0


# -- the store under test, every write attempt timed -----------------------------------------


@dataclass(frozen=True)
class Attempt:
    started: float  # monotonic
    seconds: float
    error: str | None


class WatchedRedisStorage(RedisStorage):
    """The real Redis store; every ``write`` (one attempt of the recorder) is timed and kept."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.attempts: list[Attempt] = []
        self.changes: list[tuple[float, float]] = []

    async def write(self, events: Sequence[Event], **options: Any) -> WriteResult:
        t0 = time.monotonic()
        error: str | None = None
        try:
            return await super().write(events, **options)
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.attempts.append(Attempt(t0, time.monotonic() - t0, error))

    async def change_error_groups(self, *args: Any, **kw: Any) -> Any:
        """Timed too: the error groups' lifecycle shares the store's pool with the writer."""
        t0 = time.monotonic()
        try:
            return await super().change_error_groups(*args, **kw)
        finally:
            self.changes.append((t0, time.monotonic() - t0))

    def since(self, start: float, end: float | None = None) -> list[Attempt]:
        return [a for a in self.attempts if a.started >= start and (end is None or a.started < end)]


def monitor_for(url: str, *, prefix: str = PREFIX, **overrides: Any) -> Monitor:
    storage = WatchedRedisStorage(url, prefix=prefix, timeout=STORE_TIMEOUT_S)
    return Monitor(storage=storage, **monitor_settings(**overrides))


def watched(monitor: Monitor) -> WatchedRedisStorage:
    assert isinstance(monitor.storage, WatchedRedisStorage)
    return monitor.storage


# -- what Redis holds -----------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    """What Redis holds under a prefix, read over an admin connection (not asgimon's)."""

    api_calls: int
    errors: int
    markers: int  # ``{p}:seen:*`` idempotency markers: one per event ever inserted
    rollup_counts: dict[str, int]
    request_ids: Counter[str]

    @property
    def events(self) -> int:
        return self.api_calls + self.errors


def _text(value: object) -> str:
    """A reply item as text (the admin client decodes, but redis-py types it loosely)."""
    assert isinstance(value, str | bytes), value
    return value if isinstance(value, str) else value.decode()


async def stored(server: RedisServer, prefix: str = PREFIX) -> Stored:
    async with server.admin() as r:
        api_ids: Counter[str] = Counter()
        for key in await r.keys(f"{prefix}:ev:api_call:*"):
            for member in await r.zrange(key, 0, -1):
                api_ids[json.loads(_text(member))["request_id"]] += 1
        errors = 0
        for key in await r.keys(f"{prefix}:ev:error:*"):
            errors += int(await r.zcard(key))
        markers = len(await r.keys(f"{prefix}:seen:*"))
        rollups: Counter[str] = Counter()
        for key in await r.keys(f"{prefix}:ru:*"):
            resolution = _text(key).split(":")[-2]
            for name, raw in (await r.hgetall(key)).items():
                series, _, field = _text(name).rpartition(SEP)
                if series.startswith("api:") and field == "c":
                    rollups[resolution] += int(raw)
    return Stored(
        api_calls=sum(api_ids.values()),
        errors=errors,
        markers=markers,
        rollup_counts=dict(rollups),
        request_ids=api_ids,
    )


def assert_store_consistent(held: Stored) -> None:
    """Each stored request once, one marker per stored event, rollups counting each once.

    A ZSET cannot hold the same member twice, so a request written twice would show in the
    rollups (counted twice) rather than in the event list.
    """
    twice = {rid: n for rid, n in held.request_ids.items() if n > 1}
    assert not twice, f"requests stored more than once: {twice}"
    assert held.markers == held.events, held
    assert held.rollup_counts == expected_rollups(held.api_calls), held


def assert_host_unaffected(control: LoadResult, run: LoadResult) -> None:
    """(i), with the store's own bound: not even one socket timeout on the request path."""
    fault_load.assert_host_unaffected(control, run, latency_bound_s=HOST_LATENCY_BOUND_S)


def assert_attempts_bounded(attempts: list[Attempt]) -> None:
    """Every write attempt returns within the store's socket timeout (plus scheduling slack)."""
    slow = [a for a in attempts if a.seconds > STORE_TIMEOUT_S + ATTEMPT_MARGIN_S]
    assert not slow, f"write attempts past the {STORE_TIMEOUT_S:g}s timeout: {slow[:5]}"


async def assert_recovers(monitor: Monitor, server: RedisServer) -> float:
    """(iv): after healing, new events persist within 10 s without anyone flushing by hand."""
    want = all_ids(RECOVERY_INDICES)

    async def persisted() -> bool:
        return want <= set((await stored(server)).request_ids)

    return await fault_load.assert_recovers(monitor, persisted)


async def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        elapsed = time.monotonic() - start
        assert elapsed < timeout, f"{what}: not within {timeout:g}s"
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def warm_up(monitor: Monitor, app: ASGIApp) -> None:
    """Ten requests stored while healthy: the pool is connected and the script loaded."""
    await drive(app, WARM_INDICES)
    stats = await drain(monitor)
    assert stats.written == len(WARM_INDICES), stats


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture
async def redis() -> AsyncIterator[RedisServer]:
    """A private redis-server for one test; killed (even paused) and removed at the end."""
    reason = missing_binary()
    if reason is not None:
        skip_or_fail(reason)
    server = await RedisServer.create()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
async def control(redis: RedisServer) -> LoadResult:
    """The no-fault run, under its own prefix: what every faulted run is held to."""
    monitor = monitor_for(redis.url(), prefix="control")
    async with monitor:
        result = await drive(monitor.wrap(host_app()))
        stats = await drain(monitor)
    held = await stored(redis, "control")
    assert_ledger_balances(stats, expected_events=EXPECTED_EVENTS)
    assert stats.written == EXPECTED_EVENTS
    assert held.events == EXPECTED_EVENTS
    assert set(held.request_ids) == all_ids(range(N_REQUESTS))
    assert_store_consistent(held)
    assert result.histogram == Counter({200: 240, 404: 30, 500: 30})
    assert result.max_latency_s < HOST_LATENCY_BOUND_S, result.max_latency_s
    assert_attempts_bounded(watched(monitor).attempts)
    return result


# -- F01: Redis killed mid-load -------------------------------------------------------------

OUTAGE_S = 3.0
SHORT_DEADLINE_S = 1.0


async def test_f01_killed_mid_load_drops_counted_and_new_server_used(
    redis: RedisServer, control: LoadResult, loop_errors: list[dict[str, Any]]
) -> None:
    monitor = monitor_for(redis.url(), retry_deadline=SHORT_DEADLINE_S, retry_backoff_max=0.25)
    async with monitor:
        app = monitor.wrap(host_app())
        await warm_up(monitor, app)
        # 300 requests over 2 s, so batches are being written when the server dies.
        load = asyncio.create_task(drive(app, rate=150))
        await wait_for(lambda: monitor.stats().written > len(WARM_INDICES), 5, "a load batch")
        redis.kill()
        down_at = time.monotonic()
        assert not load.done(), "the load ended before the kill: nothing was tested"
        # A reply already in the socket buffer is still read: let it land, then the count of
        # events the dead server took with it is final.
        await asyncio.sleep(0.2)
        written_at_kill = monitor.stats().written

        down, down_s = await health(app)
        assert down.status_code == 503, down.text
        assert down.json()["storage"]["ok"] is False
        assert down.json()["status"] == "degraded"
        assert down_s < 3.0, "the health check waited on the dead store"

        run = await load
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
        during = monitor.stats()
        assert monitor.recorder.running
        assert during.written == written_at_kill, during
        # Past the (short) retry deadline the buffered batches are dropped, and counted.
        assert during.dropped["storage_unavailable"] > 0, during
        assert during.retries > 0, during
        assert during.recorded == (
            during.written + during.duplicates + during.dropped_total + during.pending
        ), during

        await redis.start()  # a new, empty server on the same port: nobody tells asgimon
        recovery = await assert_recovers(monitor, redis)
        stats = await drain(monitor)
        healed, _ = await health(app)
        assert healed.status_code == 200, healed.text

    held = await stored(redis)
    assert_host_unaffected(control, run)
    assert_ledger_balances(
        stats,
        expected_events=len(WARM_INDICES) + EXPECTED_EVENTS + RECOVERY_REQUESTS,
        drop_reasons=frozenset({"storage_unavailable"}),
    )
    assert_store_consistent(held)
    # The new server holds exactly what was written after it started.
    assert held.events == stats.written - written_at_kill, (held, stats, written_at_kill)
    assert all_ids(RECOVERY_INDICES) <= set(held.request_ids)
    assert_attempts_bounded(watched(monitor).attempts)
    assert recovery <= RECOVERY_BOUND_S
    assert not loop_errors


# -- F02: Redis hangs -----------------------------------------------------------------------

HANG_S = 3.0


async def test_f02_hung_store_slows_no_request_and_attempts_time_out(
    redis: RedisServer, control: LoadResult, loop_errors: list[dict[str, Any]]
) -> None:
    monitor = monitor_for(redis.url())
    store = watched(monitor)
    async with monitor:
        app = monitor.wrap(host_app())
        await warm_up(monitor, app)
        written_before = monitor.stats().written

        redis.pause()
        paused_at = time.monotonic()
        try:
            run = await drive(app)
            down, down_s = await health(app)
            await asyncio.sleep(max(0.0, HANG_S - (time.monotonic() - paused_at)))
            during = monitor.stats()
        finally:
            redis.resume()
        resumed_at = time.monotonic()

        assert down.status_code == 503, down.text
        assert down_s < 3.0, f"health waited {down_s:.1f}s on a hung store"
        assert during.written == written_before, during
        assert during.retries > 0, during
        hung = store.since(paused_at, resumed_at)
        assert any(a.seconds >= STORE_TIMEOUT_S * 0.9 for a in hung), (
            f"no attempt hung: the fault was not effective: {hung}"
        )

        recovery = await assert_recovers(monitor, redis)
        stats = await drain(monitor)

    held = await stored(redis)
    assert_host_unaffected(control, run)
    assert_ledger_balances(
        stats,
        expected_events=len(WARM_INDICES) + EXPECTED_EVENTS + RECOVERY_REQUESTS,
        ambiguous=True,
    )
    assert stats.dropped_total == 0, stats
    assert_store_consistent(held)
    assert held.events == stats.written + stats.duplicates, (held, stats)
    assert all_ids(range(N_REQUESTS)) <= set(held.request_ids), "events lost"
    assert_attempts_bounded(store.attempts)
    assert recovery <= RECOVERY_BOUND_S, f"recovered {recovery:.1f}s after SIGCONT"
    assert time.monotonic() - resumed_at < 30
    assert not loop_errors


SHUTDOWN_TIMEOUT_S = 2.0
SHUTDOWN_MARGIN_S = 2.0


async def test_f02_hung_store_never_blocks_shutdown(
    redis: RedisServer, control: LoadResult, loop_errors: list[dict[str, Any]]
) -> None:
    monitor = monitor_for(redis.url(), shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await monitor.start()
    try:
        app = monitor.wrap(host_app())
        await warm_up(monitor, app)
        written_before = monitor.stats().written
        redis.pause()
        run = await drive(app)
        assert_host_unaffected(control, run)
        await asyncio.sleep(0.5)  # the writer is now inside a write nobody will answer

        t0 = time.monotonic()
        async with asyncio.timeout(30):
            await monitor.stop()
        shutdown_s = time.monotonic() - t0
    finally:
        redis.resume()
        if monitor.started:
            with contextlib.suppress(Exception):
                await monitor.stop()

    stats = monitor.stats()
    assert not stats.running
    # A write cut off at shutdown may have landed: duplicates are allowed.
    assert_ledger_balances(
        stats,
        expected_events=len(WARM_INDICES) + EXPECTED_EVENTS,
        drop_reasons=frozenset({"shutdown_timeout", "storage_unavailable"}),
        ambiguous=True,
    )
    assert stats.dropped_total > 0, stats
    assert stats.written == written_before, stats
    assert shutdown_s <= SHUTDOWN_TIMEOUT_S + SHUTDOWN_MARGIN_S, (
        f"monitor.stop() took {shutdown_s:.1f}s with shutdown_timeout={SHUTDOWN_TIMEOUT_S}s"
    )

    # Resumed: a script cut off at shutdown may still run now (it sits in the socket buffer).
    # Counted as dropped, it can be stored; nothing counted as written may be missing.
    held = await stored(redis)
    assert_store_consistent(held)
    assert stats.written <= held.events <= stats.written + stats.dropped_total, (held, stats)
    assert not loop_errors


# -- F03: Redis restarted with an empty dataset ---------------------------------------------


async def test_f03_restart_empty_reconnects_and_reloads_the_script(
    redis: RedisServer, control: LoadResult, loop_errors: list[dict[str, Any]]
) -> None:
    monitor = monitor_for(redis.url())
    async with monitor:
        app = monitor.wrap(host_app())
        await warm_up(monitor, app)
        load = asyncio.create_task(drive(app, rate=150))
        await wait_for(lambda: monitor.stats().written > len(WARM_INDICES), 5, "a load batch")
        redis.kill()
        assert not load.done(), "the load ended before the restart: nothing was tested"
        await asyncio.sleep(0.2)  # a reply already sent by the dead server lands first
        written_at_kill = monitor.stats().written
        await redis.start()  # empty: no keys, and no scripts in its script cache
        recovery = await wait_for(
            lambda: monitor.stats().written > written_at_kill,
            RECOVERY_BOUND_S,
            "a batch written to the restarted server",
        )
        run = await load
        stats = await drain(monitor)
        healed, _ = await health(app)
        assert healed.status_code == 200, healed.text

    held = await stored(redis)
    commands = await redis.info("commandstats")
    errors = await redis.info("errorstats")
    assert_host_unaffected(control, run)
    assert_ledger_balances(
        stats, expected_events=len(WARM_INDICES) + EXPECTED_EVENTS, ambiguous=True
    )
    # The next flush after the restart did not drop: the batch was retried there.
    assert stats.dropped_total == 0, stats
    assert_store_consistent(held)
    assert held.events == stats.written + stats.duplicates - written_at_kill, (
        held,
        stats,
        written_at_kill,
    )
    # NOSCRIPT: the first EVALSHA on the new server failed and the script was loaded again.
    assert errors.get("errorstat_NOSCRIPT", {}).get("count", 0) >= 1, errors
    assert commands.get("cmdstat_script|load", {}).get("calls", 0) >= 1, commands
    assert_attempts_bounded(watched(monitor).attempts)
    assert recovery <= RECOVERY_BOUND_S
    assert not loop_errors


# -- F04: Redis slow ------------------------------------------------------------------------

PROXY_LATENCY_S = 0.15


async def test_f04_slow_store_leaves_the_host_alone_and_writes_everything(
    redis: RedisServer, control: LoadResult, loop_errors: list[dict[str, Any]]
) -> None:
    async with FaultProxy(redis.port, latency=PROXY_LATENCY_S) as proxy:
        # Batches of 100 (40-60 KB): one or two proxy chunks, so ~0.3-0.45 s per write,
        # well within the 1 s timeout. This is latency, not a hang.
        monitor = monitor_for(f"redis://127.0.0.1:{proxy.port}/0", batch_size=100)
        store = watched(monitor)
        async with monitor:
            app = monitor.wrap(host_app())
            await warm_up(monitor, app)
            # A 500 too: the error groups' lifecycle, which follows the writes, takes a
            # connection of the pool while the writer holds another; it is opened now,
            # not through the slow link (there it costs the writer a second and a half).
            await drive(app, range(WARM_ERROR, WARM_ERROR + 1))
            await drain(monitor)
            await wait_for(lambda: bool(store.changes), 5, "the lifecycle's first change")
            proxy.mode = ProxyMode.LATENCY
            slow_from = time.monotonic()
            run = await drive(app)
            await drain(monitor)
            recovery = await assert_recovers(monitor, redis)
            stats = await drain(monitor)

    held = await stored(redis)
    assert_host_unaffected(control, run)
    assert_ledger_balances(
        stats, expected_events=len(WARM_INDICES) + 2 + EXPECTED_EVENTS + RECOVERY_REQUESTS
    )
    assert stats.dropped_total == 0, stats
    assert stats.retries == 0, stats
    assert_store_consistent(held)
    assert held.events == stats.written, (held, stats)
    assert all_ids(range(N_REQUESTS)) <= set(held.request_ids), "events lost"
    slow = store.since(slow_from)
    assert slow, "no write went through the slow proxy"
    assert all(a.error is None for a in slow), slow
    assert min(a.seconds for a in slow) >= 2 * PROXY_LATENCY_S * 0.9, slow
    assert_attempts_bounded(store.attempts)
    assert recovery <= RECOVERY_BOUND_S
    assert not loop_errors


# -- F05: connection reset mid-command ------------------------------------------------------

RESET_S = 1.0


async def test_f05_connection_resets_lose_nothing_and_the_pool_reconnects(
    redis: RedisServer, control: LoadResult, loop_errors: list[dict[str, Any]]
) -> None:
    async with FaultProxy(redis.port) as proxy:
        monitor = monitor_for(f"redis://127.0.0.1:{proxy.port}/0")
        store = watched(monitor)
        async with monitor:
            app = monitor.wrap(host_app())
            await warm_up(monitor, app)
            load = asyncio.create_task(drive(app, rate=150))
            await wait_for(lambda: monitor.stats().written > len(WARM_INDICES), 5, "a batch")
            # Every pooled connection is cut with RST; new ones are accepted and cut at once.
            proxy.mode = ProxyMode.RESET
            reset_at = time.monotonic()
            await asyncio.sleep(RESET_S)
            assert not load.done(), "the load ended during the resets: nothing after them"
            connections_before = proxy.connections
            proxy.mode = ProxyMode.PASS
            healed_at = time.monotonic()
            written_at_heal = monitor.stats().written
            run = await load
            recovery = await wait_for(
                lambda: monitor.stats().written > written_at_heal,
                RECOVERY_BOUND_S,
                "a batch written after the resets",
            )
            await drain(monitor)
            await assert_recovers(monitor, redis)
            stats = await drain(monitor)

    held = await stored(redis)
    assert_host_unaffected(control, run)
    assert_ledger_balances(
        stats,
        expected_events=len(WARM_INDICES) + EXPECTED_EVENTS + RECOVERY_REQUESTS,
        ambiguous=True,
    )
    assert stats.dropped_total == 0, stats
    assert_store_consistent(held)
    assert held.events == stats.written + stats.duplicates, (held, stats)
    assert all_ids(range(N_REQUESTS)) <= set(held.request_ids), "events lost"
    failed = [a for a in store.since(reset_at, healed_at) if a.error is not None]
    assert failed, "no write attempt met a reset: the fault was not effective"
    # The dead connections were replaced by new ones once the proxy passed traffic again.
    assert proxy.connections > connections_before, proxy.connections
    assert_attempts_bounded(store.attempts)
    assert recovery <= RECOVERY_BOUND_S
    assert not loop_errors


# -- F06: Redis out of memory, or read-only -------------------------------------------------

DROP_WAIT_S = 2.0 * SHORT_DEADLINE_S + 1.0
HOT_LOOP_MAX_ATTEMPTS = 15  # in 3 s, with the backoff capped at 1 s (F07)
# F06 retries with the backoff capped at 0.25 s (a short deadline): about four knocks a
# second, a few dozen in the window at worst; never one per event (hundreds).
REFUSED_MAX_ATTEMPTS = 40


async def out_of_memory(redis: RedisServer) -> Callable[[], Any]:
    """``maxmemory`` below what is used, ``noeviction``: every write is refused with OOM."""
    used = int((await redis.info("memory"))["used_memory"])
    await redis.command("CONFIG", "SET", "maxmemory-policy", "noeviction")
    await redis.command("CONFIG", "SET", "maxmemory", str(min(used // 2, 1024 * 1024)))

    async def heal() -> None:
        await redis.command("CONFIG", "SET", "maxmemory", "0")

    return heal


async def read_only(redis: RedisServer) -> Callable[[], Any]:
    """A replica of a primary that does not exist: every write is refused with READONLY."""
    await redis.command("REPLICAOF", "127.0.0.1", str(free_port()))

    async def heal() -> None:
        await redis.command("REPLICAOF", "NO", "ONE")

    return heal


@pytest.mark.parametrize(("fault", "code"), [("oom", "OOM"), ("readonly", "READONLY")])
async def test_f06_oom_or_readonly_is_unavailable_then_recovers(
    redis: RedisServer,
    control: LoadResult,
    loop_errors: list[dict[str, Any]],
    fault: str,
    code: str,
) -> None:
    monitor = monitor_for(redis.url(), retry_deadline=SHORT_DEADLINE_S, retry_backoff_max=0.25)
    store = watched(monitor)
    async with monitor:
        app = monitor.wrap(host_app())
        await warm_up(monitor, app)
        heal = await (out_of_memory if fault == "oom" else read_only)(redis)
        fault_at = time.monotonic()
        run = await drive(app)
        await asyncio.sleep(max(0.0, DROP_WAIT_S - (time.monotonic() - fault_at)))
        during = monitor.stats()
        attempts = store.since(fault_at)
        degraded, _ = await health(app)
        await heal()
        recovery = await assert_recovers(monitor, redis)
        stats = await drain(monitor)

    held = await stored(redis)
    assert_host_unaffected(control, run)
    # Classified: a full or read-only server cannot take writes now; the data is not bad.
    assert during.last_error is not None, during
    assert code in during.last_error, f"last_error does not name {code}: {during.last_error!r}"
    assert_ledger_balances(
        stats,
        expected_events=len(WARM_INDICES) + EXPECTED_EVENTS + RECOVERY_REQUESTS,
        drop_reasons=frozenset({"storage_unavailable"}),
    )
    assert during.dropped["storage_unavailable"] > 0, during
    assert during.retries > 0, during
    # No crash loop: retried with the store's backoff, not once per event.
    assert len(attempts) < REFUSED_MAX_ATTEMPTS, (
        f"{len(attempts)} write attempts in {DROP_WAIT_S:g}s against a {fault} store"
    )
    assert degraded.json()["status"] == "degraded", degraded.text
    assert_store_consistent(held)
    assert held.events == stats.written, (held, stats)
    assert all_ids(RECOVERY_INDICES) <= set(held.request_ids)
    assert_attempts_bounded(store.attempts)
    assert recovery <= RECOVERY_BOUND_S
    assert not loop_errors


# -- F07: Redis password changed ------------------------------------------------------------

PASSWORD = "x"
AUTH_WINDOW_S = 3.0


async def test_f07_password_changed_backs_off_and_recovers(
    redis: RedisServer, control: LoadResult, loop_errors: list[dict[str, Any]]
) -> None:
    monitor = monitor_for(redis.url(), retry_backoff_max=1.0)
    store = watched(monitor)
    async with monitor:
        app = monitor.wrap(host_app())
        await warm_up(monitor, app)
        written_before = monitor.stats().written
        await redis.command("CONFIG", "SET", "requirepass", PASSWORD)
        # Connections authenticated before the change stay so: cut them, as a restart would.
        assert await redis.kill_clients(password=PASSWORD) >= 1
        changed_at = time.monotonic()
        run = await drive(app)
        denied, _ = await health(app)
        retries_before = monitor.stats().retries
        await asyncio.sleep(max(0.0, AUTH_WINDOW_S - (time.monotonic() - changed_at)))
        during = monitor.stats()
        attempts = store.since(changed_at)
        await redis.command("CONFIG", "SET", "requirepass", "", password=PASSWORD)
        recovery = await assert_recovers(monitor, redis)
        stats = await drain(monitor)

    held = await stored(redis)
    assert_host_unaffected(control, run)
    assert denied.status_code == 503, denied.text
    assert during.written == written_before, during
    assert during.last_error is not None, during
    assert "auth" in during.last_error.lower(), during.last_error
    # Backoff, not a hot loop: a handful of knocks in 3 s.
    assert 0 < during.retries < HOT_LOOP_MAX_ATTEMPTS, during
    assert during.retries - retries_before < HOT_LOOP_MAX_ATTEMPTS, during
    assert len(attempts) < HOT_LOOP_MAX_ATTEMPTS, (
        f"{len(attempts)} write attempts in {AUTH_WINDOW_S:g}s against a refusing store"
    )
    assert_ledger_balances(
        stats, expected_events=len(WARM_INDICES) + EXPECTED_EVENTS + RECOVERY_REQUESTS
    )
    assert stats.dropped_total == 0, stats
    assert_store_consistent(held)
    assert held.events == stats.written, (held, stats)
    assert all_ids(range(N_REQUESTS)) <= set(held.request_ids), "events lost"
    assert_attempts_bounded(store.attempts)
    assert recovery <= RECOVERY_BOUND_S
    assert not loop_errors
