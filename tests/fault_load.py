"""What the fault tests share: the host app, the load that drives it, and what "correct" means.

``tests/test_faults_sqlite.py``, ``tests/test_faults_postgres.py`` and
``tests/test_faults_redis.py`` drive the same small Starlette app through
``httpx.ASGITransport``, once against a healthy store (the control) and once under a fault,
and hold every faulted run to the control run (RELIABILITY.md). What each store holds is
read by the test module for that store; the checks that only look at the host's answers and
the recorder's ledger live here.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from asgimon import Monitor, RecorderStats

N_REQUESTS = 300
CONCURRENCY = 16
RECOVERY_REQUESTS = 20
RECOVERY_BOUND_S = 10.0  # (iv): new events persist within 10 s of healing
HOST_LATENCY_BOUND_S = 1.0  # (i): no request waited on storage

Outcome = tuple[int, bytes]


def path_for(i: int) -> str:
    """The status of request i is fixed by i % 10: six 200 JSON, one 404, one 500, two streams."""
    kind = i % 10
    if kind < 6:
        return f"/items/{i}"
    if kind == 6:
        return f"/missing/{i}"
    if kind == 7:
        return "/boom"
    return f"/stream/{i}"


def request_id(i: int) -> str:
    return f"req-{i}"


def all_ids(indices: range) -> set[str]:
    return {request_id(i) for i in indices}


N_500 = sum(1 for i in range(N_REQUESTS) if i % 10 == 7)
# Each request is one api_call event; each 500 also captures one unhandled-error event.
EXPECTED_EVENTS = N_REQUESTS + N_500
# Requests that only hit /items (i % 10 == 0): one event each, all 200.
RECOVERY_INDICES = range(10_000, 10_000 + RECOVERY_REQUESTS * 10, 10)


# -- the host app ---------------------------------------------------------------------------


async def _item(request: Request) -> Response:
    return JSONResponse({"item": request.path_params["item_id"], "ok": True})


async def _boom(request: Request) -> Response:
    raise RuntimeError("the host app failed")


async def _stream(request: Request) -> Response:
    n = request.path_params["n"]

    async def chunks() -> AsyncIterator[bytes]:
        for part in range(3):
            yield f"{n}:{part};".encode()
            await asyncio.sleep(0)

    return StreamingResponse(chunks(), media_type="text/plain")


def host_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/items/{item_id:int}", _item),
            Route("/boom", _boom),
            Route("/stream/{n:int}", _stream),
        ]
    )


# -- load -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadResult:
    outcomes: list[Outcome]
    latencies: list[float]

    @property
    def histogram(self) -> Counter[int]:
        return Counter(status for status, _ in self.outcomes)

    @property
    def max_latency_s(self) -> float:
        return max(self.latencies)

    @property
    def p99_s(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def drive(
    app: ASGIApp,
    indices: range = range(N_REQUESTS),
    *,
    rate: float | None = None,
    ids: Callable[[int], str] = request_id,
    timeout: float = 60.0,
) -> LoadResult:
    """One request per index, ``CONCURRENCY`` at a time; at most ``rate`` starts per second.

    Outcomes come back in index order; latencies are what the client measured. The whole
    load must be over within ``timeout`` seconds.
    """
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    sem = asyncio.Semaphore(CONCURRENCY)
    latencies: list[float] = []
    start = time.monotonic()

    async def one(client: httpx.AsyncClient, k: int, i: int) -> Outcome:
        if rate is not None:
            await asyncio.sleep(max(0.0, start + k / rate - time.monotonic()))
        async with sem:
            t0 = time.perf_counter()
            response = await client.get(path_for(i), headers={"x-request-id": ids(i)})
            latencies.append(time.perf_counter() - t0)
            return response.status_code, response.content

    async with (
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
        asyncio.timeout(timeout),
    ):
        outcomes = await asyncio.gather(*(one(client, k, i) for k, i in enumerate(indices)))
    return LoadResult(list(outcomes), latencies)


def local_client(app: ASGIApp) -> httpx.AsyncClient:
    """A loopback client with a loopback Host: the dashboard answers it without auth."""
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1234))
    return httpx.AsyncClient(transport=transport, base_url="http://localhost", timeout=10)


def monitor_settings(**overrides: Any) -> dict[str, Any]:
    """``Monitor`` settings for a networked store; ``overrides`` replace any of them."""
    # A generous retry deadline: an outage shorter than it loses nothing.
    settings: dict[str, Any] = {
        "flush_interval": 0.05,
        "retry_deadline": 30.0,
        "retry_backoff_max": 0.5,
        "shutdown_timeout": 5.0,
        "rate_limit_enabled": False,
        "alerts_enabled": False,
        # The ledger counts the host's own events exactly: no process samples among them.
        "system_metrics_interval": 0,
        # Every call kept raw: losses and duplicates are counted on the raw rows.
        "api_call_sample_rate": 1.0,
    }
    settings.update(overrides)
    return settings


# -- what "correct" means -------------------------------------------------------------------


async def drain(monitor: Monitor, timeout: float = 30.0) -> RecorderStats:
    async with asyncio.timeout(timeout):
        await monitor.recorder.flush()
    return monitor.stats()


def assert_ledger_balances(
    stats: RecorderStats,
    *,
    expected_events: int,
    drop_reasons: frozenset[str] = frozenset(),
    ambiguous: bool = False,
) -> None:
    """(ii): every event is written or counted as dropped for one of ``drop_reasons``.

    ``ambiguous``: a write may have reached the store although it was reported failed (a
    COMMIT or a script sent before the connection died); its retry then finds those events
    stored and counts them as duplicates, so duplicates are allowed.
    """
    assert stats.pending == 0, stats
    assert stats.recorded == expected_events, stats
    assert stats.recorded == stats.written + stats.duplicates + stats.dropped_total, stats
    assert stats.internal_errors == 0, stats
    if not ambiguous:
        assert stats.duplicates == 0, stats
    reasons = {reason for reason, n in stats.dropped.items() if n}
    assert reasons <= drop_reasons, stats


def expected_rollups(api_calls: int) -> dict[str, int]:
    """The api rollups when they count exactly ``api_calls`` stored requests, each once."""
    return dict.fromkeys(("minute", "hour", "day"), api_calls) if api_calls else {}


def assert_host_unaffected(
    control: LoadResult, run: LoadResult, *, latency_bound_s: float = HOST_LATENCY_BOUND_S
) -> None:
    """(i): same statuses, same bodies, request by request; no request waited on storage."""
    assert run.histogram == control.histogram
    assert run.outcomes == control.outcomes
    assert run.max_latency_s < latency_bound_s, (
        f"a request took {run.max_latency_s:.3f}s (control: {control.max_latency_s:.3f}s)"
    )


async def assert_recovers(
    monitor: Monitor,
    persisted: Callable[[], Awaitable[bool]],
    indices: range = RECOVERY_INDICES,
    *,
    timeout: float = 60.0,
) -> float:
    """(iv): after healing, new events persist within 10 s without anyone flushing by hand.

    Sends one /items request per index (``timeout`` bounds that load), then polls
    ``persisted`` until the store holds them.
    """
    start = time.monotonic()
    result = await drive(monitor.wrap(host_app()), indices, timeout=timeout)
    assert result.histogram == Counter({200: len(indices)})
    while not await persisted():
        elapsed = time.monotonic() - start
        assert elapsed < RECOVERY_BOUND_S, (
            f"nothing persisted {elapsed:.1f}s after healing: {monitor.stats()}"
        )
        await asyncio.sleep(0.05)
    return time.monotonic() - start
