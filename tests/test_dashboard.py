"""The dashboard sub-app: who may see it, and what its health and summary say."""

from __future__ import annotations

import random
import time
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from asgimon import ApiCall, MemoryStorage, Monitor, StorageUnavailable
from asgimon.dashboard.access import is_loopback

from .asgi import http_scope, run


async def status_of(monitor: Monitor, client_host: str, headers: list[tuple[bytes, bytes]]) -> int:
    if not any(name == b"host" for name, _ in headers):
        headers = [(b"host", b"localhost:8000"), *headers]
    scope = http_scope("/analytics/api/health", headers=headers)
    scope["client"] = (client_host, 40000)
    sent = await run(monitor.wrap(Starlette()), scope, [{"type": "http.request", "body": b""}])
    status: int = sent[0]["status"]
    return status


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.1", "::1", "::ffff:127.0.0.1"])
async def test_loopback_clients_are_answered(host: str) -> None:
    async with Monitor(storage=MemoryStorage()) as monitor:
        assert await status_of(monitor, host, []) == 200


async def test_http_1_0_from_loopback_is_a_proxy_not_a_local_user() -> None:
    """nginx's default proxy_pass speaks HTTP/1.0 and adds no forwarding header."""
    async with Monitor(storage=MemoryStorage()) as monitor:
        scope = http_scope("/analytics/api/health", headers=[(b"host", b"127.0.0.1:8000")])
        scope["http_version"] = "1.0"
        sent = await run(monitor.wrap(Starlette()), scope, [{"type": "http.request", "body": b""}])
        assert sent[0]["status"] == 404


@pytest.mark.parametrize(
    "host", ["10.0.0.5", "192.168.1.2", "8.8.8.8", "::ffff:10.1.1.1", "", "localhost"]
)
async def test_other_clients_get_a_404(host: str) -> None:
    async with Monitor(storage=MemoryStorage()) as monitor:
        assert await status_of(monitor, host, []) == 404


@pytest.mark.parametrize(
    "header",
    [
        b"x-forwarded-for",
        b"forwarded",
        b"x-real-ip",
        b"x-forwarded-host",
        b"via",
        b"x-forwarded-proto",
        b"cf-connecting-ip",
    ],
)
async def test_a_local_reverse_proxy_does_not_open_it(header: bytes) -> None:
    async with Monitor(storage=MemoryStorage()) as monitor:
        assert await status_of(monitor, "127.0.0.1", [(header, b"1.2.3.4")]) == 404


@pytest.mark.parametrize(
    ("host", "status"),
    [
        (b"localhost", 200),
        (b"127.0.0.1:8000", 200),
        (b"[::1]:8000", 200),
        (b"LOCALHOST:1", 200),
        (b"rebind.attacker.example", 404),
        (b"localhost.attacker.example", 404),
        (b"127.0.0.1.nip.io", 404),
        (b"", 404),
    ],
)
async def test_a_foreign_host_name_is_refused_against_dns_rebinding(
    host: bytes, status: int
) -> None:
    async with Monitor(storage=MemoryStorage()) as monitor:
        assert await status_of(monitor, "127.0.0.1", [(b"host", host)]) == status


async def test_unknown_paths_and_methods_answer_in_the_json_error_shape() -> None:
    async with Monitor(storage=MemoryStorage()) as monitor:
        transport = httpx.ASGITransport(monitor.wrap(Starlette()), client=("127.0.0.1", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            missing = await c.get("/analytics/api/nope")
            wrong = await c.post("/analytics/api/health")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert not is_loopback(None)
    assert not is_loopback("0.0.0.0")


class DownStorage(MemoryStorage):
    async def health(self) -> dict[str, Any]:
        raise StorageUnavailable("connection refused")

    async def projects(self) -> list[str]:
        raise StorageUnavailable("connection refused")


async def test_health_and_summary_answer_503_when_storage_is_down() -> None:
    async with Monitor(storage=DownStorage()) as monitor:
        app = monitor.wrap(Starlette())
        transport = httpx.ASGITransport(app, client=("127.0.0.1", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            health = await c.get("/analytics/api/health")
            summary = await c.get("/analytics/api/summary")
    assert health.status_code == 503
    assert health.json()["storage"]["ok"] is False
    assert health.json()["storage"]["error"] == "connection refused"
    assert summary.status_code == 503
    assert summary.json()["error"]["code"] == "storage_unavailable"


async def test_the_summary_matches_figures_computed_from_the_raw_calls() -> None:
    rng = random.Random(3)
    now = time.time()
    calls = [
        ApiCall(
            timestamp=now - rng.uniform(0, 3600),
            method=rng.choice(["GET", "POST"]),
            endpoint="/a",
            status=rng.choice([200, 201, 503]),
            duration_ms=rng.expovariate(1 / 40),
            total_ms=1.0,
        )
        for _ in range(500)
    ]
    storage = MemoryStorage()
    await storage.write(calls)
    async with Monitor(storage=storage) as monitor:
        transport = httpx.ASGITransport(monitor.wrap(Starlette()), client=("127.0.0.1", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            body = (await c.get("/analytics/api/summary")).json()
    [project] = body["projects"]
    assert project["api"]["count"] == 500
    assert project["api"]["errors"] == sum(1 for c in calls if c.status >= 500)
    for row in project["endpoints"]:
        mine = sorted(c.duration_ms for c in calls if c.method == row["method"])
        assert row["count"] == len(mine)
        assert row["avgMs"] == pytest.approx(sum(mine) / len(mine))
        truth = mine[int(0.95 * (len(mine) - 1))]
        assert abs(row["p95Ms"] - truth) <= 0.02 * truth


async def test_health_is_degraded_only_while_failures_are_recent() -> None:
    import time

    async with Monitor(storage=MemoryStorage()) as monitor:
        monitor.recorder._note_error(StorageUnavailable("down"))
        assert (await monitor.health())["status"] == "degraded"
        monitor.recorder._last_error_at = time.time() - 120  # the failure is two minutes old
        body = await monitor.health()
    assert body["status"] == "ok"
    assert body["recorder"]["lastError"] == "down"
    assert body["jobs"]["purge"]["every"] == 3600.0
