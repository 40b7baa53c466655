"""A real uvicorn as a subprocess on a free loopback port, and the load sent to it.

Shared by ``tests/test_workers.py``, ``tests/test_multiworker_postgres.py`` and
``tests/test_faults_postgres.py``. The app under ``tests/apps/`` is configured only through
the environment, as in production (``Monitor.from_env()`` in each worker process).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .pg_cluster import free_port

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Server:
    proc: asyncio.subprocess.Process
    base_url: str
    log: Path
    workers: int

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@contextlib.asynccontextmanager
async def uvicorn_server(
    app: str,
    url: str,
    log: Path,
    *,
    workers: int,
    env: dict[str, str] | None = None,
    ready_timeout: float | None = 30.0,
) -> AsyncIterator[Server]:
    """``uvicorn <app> --factory`` on a free loopback port, its output in ``log``.

    ``app`` is ``module:factory``; the store is ``url`` and ``env`` adds to (or overrides)
    the environment. With a ``ready_timeout``, yields once every worker has answered (see
    :func:`worker_pids`); with None, as soon as the master is spawned, so several servers
    start side by side. Its whole process group, which this test created, is killed if the
    test fails before stopping it.
    """
    port = free_port()
    environ = {
        **os.environ,
        "ANALYTICS_STORAGE_URL": url,
        "ANALYTICS_FLUSH_INTERVAL": "0.2",
        "RATE_LIMIT_ENABLED": "false",
        "ALERTS_ENABLED": "false",
        "ANALYTICS_SYSTEM_METRICS_INTERVAL": "0",
        # Every call kept raw: the tests count each request's row.
        "ANALYTICS_API_CALL_SAMPLE_RATE": "1",
        **(env or {}),
    }
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--factory",
            "--workers",
            str(workers),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--lifespan",
            "on",
            "--no-access-log",
            "--log-level",
            "warning",
            cwd=ROOT,
            env=environ,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(proc, f"http://127.0.0.1:{port}", log, workers)
    try:
        if ready_timeout is not None:
            await worker_pids(server, ready_timeout)
        yield server
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


async def worker_pids(server: Server, timeout: float = 30.0) -> set[str]:
    """Poll ``/health`` on fresh connections until every worker of ``server`` has answered."""
    pids: set[str] = set()
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=server.base_url, timeout=2.0) as client:
        while len(pids) < server.workers:
            assert time.monotonic() < deadline, (
                f"only workers {pids} answered in {timeout}s\n{server.output()}"
            )
            try:
                response = await client.get("/health", headers={"connection": "close"})
            except httpx.TransportError:
                await asyncio.sleep(0.05)
                continue
            assert response.status_code == 200, server.output()
            pids.add(response.headers["x-worker-pid"])
    return pids


async def sigterm_and_wait(server: Server, timeout: float = 30.0) -> None:
    """SIGTERM to the master; lifespan shutdown flushes each worker before it exits."""
    server.proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(timeout):
        code = await server.proc.wait()
    # uvicorn re-raises the signal it handled once it has shut down cleanly.
    assert code in (0, -signal.SIGTERM), server.output()


@dataclass
class ItemsTraffic:
    """What :func:`send_items` saw: statuses, answers per worker pid, wrong bodies, ids sent."""

    statuses: Counter[int] = field(default_factory=Counter)
    by_worker: Counter[str] = field(default_factory=Counter)
    bad_bodies: list[int] = field(default_factory=list)
    request_ids: set[str] = field(default_factory=set)


async def send_items(
    base_urls: Sequence[str],
    n: int,
    *,
    concurrency: int,
    reconnect_every: int,
    send_request_ids: bool,
) -> ItemsTraffic:
    """``n`` GETs of ``/items/{i}`` from ``concurrency`` clients, one connection each.

    Client ``k`` talks to ``base_urls[k % len(base_urls)]`` on a connection of its own,
    opened anew every ``reconnect_every`` requests; the clients start 10 ms apart: one worker
    waking up can accept every connection queued at that moment, so connections opened at
    once may all land on one worker. With ``send_request_ids``, request ``i`` carries
    ``x-request-id: req-{i}`` (kept in ``request_ids``).
    """
    traffic = ItemsTraffic()
    indices = iter(range(n))

    async def client_loop(k: int) -> None:
        await asyncio.sleep(k * 0.01)
        sent = reconnect_every
        while sent == reconnect_every:
            sent = 0
            base_url = base_urls[k % len(base_urls)]
            async with httpx.AsyncClient(base_url=base_url, timeout=10.0) as client:
                for _, i in zip(range(reconnect_every), indices, strict=False):
                    sent += 1
                    headers = None
                    if send_request_ids:
                        rid = f"req-{i}"
                        traffic.request_ids.add(rid)
                        headers = {"x-request-id": rid}
                    response = await client.get(f"/items/{i}", headers=headers)
                    traffic.statuses[response.status_code] += 1
                    traffic.by_worker[response.headers.get("x-worker-pid", "?")] += 1
                    if response.status_code == 200 and response.json() != {"item": str(i)}:
                        traffic.bad_bodies.append(i)

    async with asyncio.TaskGroup() as tg:
        for k in range(concurrency):
            tg.create_task(client_loop(k))
    return traffic
