"""The host's rate limit as ``monitor.wrap`` applies it: the settings, the refusals recorded
into ``GET /api/ratelimits/{projectId}``, and the administration API (limits, usage, reset,
overrides every worker sees)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from asgimon import ConfigError, MemoryStorage, Monitor, Settings, Storage, storage_from_url
from asgimon.ratelimit.keys import hashed

from .limit_headers import remaining, standing
from .tokens import JWT_SETTINGS, bearer, mint

API = "/analytics/api"
ADMIN = f"{API}/admin/ratelimits"
ME = "addr:127.0.0.1"  # httpx's ASGI transport is this client


async def item(request: Request) -> Response:
    return PlainTextResponse("item " + request.path_params["item_id"])


async def pay(request: Request) -> Response:
    return PlainTextResponse("paid")


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


def host_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/items/{item_id}", item),
            Route("/pay", pay, methods=["POST"]),
            Route("/health", health),
        ]
    )


async def opened(monitor: Monitor) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=monitor.wrap(host_app()))
    async with monitor, httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        yield c


def monitor_of(storage: Storage | None = None, **settings: Any) -> Monitor:
    base: dict[str, Any] = {"flush_interval": 0.01, "api_rate_limit": None}
    return Monitor(storage=storage or MemoryStorage(), **{**base, **settings})


async def settle(monitor: Monitor) -> None:
    monitor.rate_limits.denials.flush()
    await monitor.recorder.flush()


async def test_the_default_limit_and_its_burst_hold_for_the_host_app_alone() -> None:
    monitor = monitor_of(rate_limit_max=3, rate_limit_burst=1)
    async for client in opened(monitor):
        answers = [await client.get(f"/items/{i}") for i in range(6)]
        assert [r.status_code for r in answers] == [200, 200, 200, 200, 429, 429]
        # MAX + BURST in the window; the tightest limit is the one the headers show.
        assert [remaining(r) for r in answers[:4]] == [3, 2, 1, 0]
        both = '"default";q=4;w=60, "default/120s";q=6;w=120'
        assert answers[0].headers["ratelimit-policy"] == both
        assert answers[0].headers["ratelimit"].startswith('"default";r=3;t=')
        assert answers[0].text == "item 0"  # the host's body, untouched
        refused = answers[4]
        body = refused.json()
        assert body["error"]["code"] == "rate_limited"
        assert body["limit"] == "default"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert body["retryAfter"] == int(refused.headers["retry-after"])
        # Health checks are exempt, and the dashboard keeps its own limit.
        assert {(await client.get("/health")).status_code for _ in range(10)} == {200}
        assert "ratelimit" not in (await client.get("/health")).headers
        assert {(await client.get(f"{API}/health")).status_code for _ in range(10)} == {200}


async def test_refusals_are_recorded_by_key_rule_and_endpoint(storage: Storage) -> None:
    monitor = monitor_of(
        storage, rate_limit_max=2, rate_limit_burst=0, rate_limit_endpoints="POST /pay=1/minute"
    )
    async for client in opened(monitor):
        for i in range(7):
            await client.get(f"/items/{1000 + i}")
        for _ in range(4):
            await client.post("/pay")
        await settle(monitor)
        r = await client.get(f"{API}/ratelimits/default", params={"range": "1h"})
        assert r.status_code == 200, r.text
        figures = r.json()
    assert (figures["totalDenied"], figures["totalShadowDenied"]) == (8, 0)
    assert {(b["rule"], b["denied"]) for b in figures["byRule"]} == {
        ("default", 5),
        ("POST /pay", 3),
    }
    (key,) = figures["topKeys"]
    assert key["key"] == hashed(ME)  # hashed: no address is stored
    assert (key["denied"], key["rules"]) == (8, ["POST /pay", "default"])
    endpoints = {(e["method"], e["path"]): e["denied"] for e in figures["topEndpoints"]}
    assert endpoints == {("GET", "/items/{id}"): 5, ("POST", "/pay"): 3}  # ids never stored
    assert sum(p["denied"] for p in figures["denialTrend"]) == 8
    assert figures["throttledKeys"] == 1
    assert {d["limit"] for d in figures["recentDenials"]} == {1, 2}


async def test_shadow_mode_lets_everything_through_and_records_what_it_would_refuse() -> None:
    monitor = monitor_of(rate_limit_max=2, rate_limit_burst=0, rate_limit_shadow=True)
    async for client in opened(monitor):
        answers = [await client.get("/items/1") for _ in range(5)]
        assert {r.status_code for r in answers} == {200}
        assert not any("ratelimit" in r.headers for r in answers)
        await settle(monitor)
        figures = (await client.get(f"{API}/ratelimits/default")).json()
    assert (figures["totalDenied"], figures["totalShadowDenied"]) == (0, 3)


async def test_the_kill_switch_and_the_headers_switch() -> None:
    off = monitor_of(rate_limit_max=1, rate_limit_enabled=False)
    async for client in opened(off):
        answers = [await client.get("/items/1") for _ in range(5)]
        assert {r.status_code for r in answers} == {200}
        assert "ratelimit" not in answers[0].headers
    by_default = monitor_of(rate_limit_max=2, rate_limit_burst=0)
    async for client in opened(by_default):
        first = await client.get("/items/1")
        assert standing(first)[:2] == ("default", 1)
        assert not any(name.startswith("x-ratelimit") for name in first.headers)
    every = monitor_of(rate_limit_max=2, rate_limit_burst=0, rate_limit_headers="all")
    async for client in opened(every):
        first = await client.get("/items/1")
        _, left, reset = standing(first)
        assert (first.headers["x-ratelimit-limit"], first.headers["x-ratelimit-remaining"]) == (
            "2",
            str(left),
        )
        assert first.headers["x-ratelimit-reset"] == str(reset)
    quiet = monitor_of(rate_limit_max=1, rate_limit_burst=0, rate_limit_headers="none")
    async for client in opened(quiet):
        first, second = await client.get("/items/1"), await client.get("/items/1")
        assert (first.status_code, second.status_code) == (200, 429)
        assert "ratelimit" not in first.headers
        # A refusal always has every header, and says when to retry.
        assert "retry-after" in second.headers
        assert second.headers["x-ratelimit-remaining"] == "0"
        assert standing(second)[1] == 0


async def test_tiers_and_costs_from_the_hosts_callbacks() -> None:
    def tier(scope: Scope) -> str | None:
        plan = dict(scope["headers"]).get(b"x-plan")
        return "5/minute" if plan == b"pro" else None

    def cost(scope: Scope) -> int:
        return 2 if scope["path"].startswith("/items/big") else 1

    monitor = monitor_of(
        rate_limit_max=2,
        rate_limit_burst=0,
        rate_limit_key_header="x-api-key",
        rate_limit_tier=tier,
        rate_limit_cost=cost,
    )
    async for client in opened(monitor):
        pro = {"x-plan": "pro", "x-api-key": "pro-customer"}
        assert [(await client.get("/items/1", headers=pro)).status_code for _ in range(6)] == [
            *[200] * 5,
            429,
        ]
        free = {"x-api-key": "free-customer"}
        assert (await client.get("/items/big", headers=free)).status_code == 200
        assert (await client.get("/items/1", headers=free)).status_code == 429


async def test_a_verified_jwt_subject_is_the_key_and_a_forged_one_is_not() -> None:
    monitor = monitor_of(
        rate_limit_max=1, rate_limit_burst=0, rate_limit_jwt_subject=True, **JWT_SETTINGS
    )
    async for client in opened(monitor):
        alice = bearer(mint({"sub": "alice"}))
        bob = bearer(mint({"sub": "bob"}))
        assert (await client.get("/items/1", headers=alice)).status_code == 200
        assert (await client.get("/items/1", headers=alice)).status_code == 429
        assert (await client.get("/items/1", headers=bob)).status_code == 200
        # Signed with another key: no subject, so the address is the key (its first request).
        forged = bearer(mint({"sub": "carol"}, key="another-secret-of-thirty-two-bytes!!"))
        assert (await client.get("/items/1", headers=forged)).status_code == 200
        assert (await client.get("/items/1", headers=forged)).status_code == 429
    with pytest.raises(ConfigError, match="RATE_LIMIT_JWT_SUBJECT"):
        Settings(rate_limit_jwt_subject=True)


async def test_an_override_replaces_the_default_for_its_key_until_removed(
    storage: Storage,
) -> None:
    monitor = monitor_of(storage, rate_limit_max=10, rate_limit_burst=0)
    async for client in opened(monitor):
        put = await client.put(
            f"{ADMIN}/overrides", json={"subject": ME, "rate": "2/minute", "note": "abuse"}
        )
        assert put.status_code == 200, put.text
        assert (put.json()["subject"], put.json()["rate"], put.json()["createdBy"]) == (
            ME,
            "2/minute",
            "local",
        )
        answers = [await client.get("/items/1") for _ in range(3)]
        assert [r.status_code for r in answers] == [200, 200, 429]
        assert answers[0].headers["ratelimit-policy"] == '"override";q=2;w=60'
        listed = (await client.get(f"{ADMIN}/overrides")).json()["overrides"]
        assert [(o["subject"], o["note"]) for o in listed] == [(ME, "abuse")]
        assert await storage.rate_limit_overrides() != []  # stored, for every worker

        usage = (await client.get(f"{ADMIN}/usage", params={"subject": ME})).json()
        assert usage["rules"][0]["name"] == "override"
        assert usage["rules"][0]["limits"][0]["used"] == 2
        reset = await client.post(f"{ADMIN}/reset", json={"subject": ME})
        assert reset.status_code == 200, reset.text
        assert (await client.get("/items/1")).status_code == 200

        gone = await client.delete(f"{ADMIN}/overrides", params={"subject": ME})
        assert gone.status_code == 200
        assert (await client.get("/items/1")).headers["ratelimit-policy"] == '"default";q=10;w=60'
        again = await client.delete(f"{ADMIN}/overrides", params={"subject": ME})
        assert again.status_code == 404


async def test_an_override_set_through_one_worker_holds_in_another(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    one = monitor_of(storage_from_url(url), rate_limit_max=1000)
    two = monitor_of(storage_from_url(url), rate_limit_max=1000)
    async for first in opened(one):
        async for second in opened(two):
            r = await first.put(f"{ADMIN}/overrides", json={"subject": ME, "rate": "1/minute"})
            assert r.status_code == 200, r.text
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                policy = (await second.get("/items/1")).headers.get("ratelimit-policy")
                if policy and policy.startswith('"override"'):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the second worker did not see the override in 3 s")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rate": "5/minute"}, "subject"),
        ({"subject": "alice", "rate": "5/minute"}, "subject"),
        ({"subject": "addr:not-an-ip", "rate": "5/minute"}, "subject"),
        ({"subject": "addr:10.0.0.0/8", "rate": "5/minute"}, "subject"),  # one client, no net
        ({"subject": "addr:2001:db8::/48", "rate": "5/minute"}, "subject"),  # not the /64
        ({"subject": "user:alice"}, "rate"),
        ({"subject": "user:alice", "rate": "lots"}, "rate"),
        ({"subject": "user:alice", "rate": "5/minute", "expiresAt": 5}, "expiresAt"),
        ({"subject": "user:alice", "rate": "5/minute", "expiresAt": "soon"}, "expiresAt"),
        ({"subject": "user:alice", "rate": "5/minute", "colour": "red"}, "colour"),
        ({"subject": "user:alice", "rate": "5/minute", "note": "x" * 501}, "note"),
    ],
)
async def test_a_bad_override_is_a_422_naming_the_field_and_stores_nothing(
    body: dict[str, Any], field: str
) -> None:
    monitor = monitor_of()
    async for client in opened(monitor):
        r = await client.put(f"{ADMIN}/overrides", json=body)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["details"][0]["field"] == field
        assert await monitor.storage.rate_limit_overrides() == []
        bad_usage = await client.get(f"{ADMIN}/usage", params={"subject": "nobody"})
        assert bad_usage.status_code == 422
        assert (await client.post(f"{ADMIN}/reset", json={})).status_code == 422


async def test_only_admins_administer_the_rate_limit() -> None:
    monitor = monitor_of(**JWT_SETTINGS)
    async for client in opened(monitor):
        tenant = bearer(mint({"sub": "alice", "projects": ["default"]}))
        admin = bearer(mint({"sub": "ops", "admin": True}))
        for method, path in (
            ("GET", "/limits"),
            ("GET", "/overrides"),
            ("GET", f"/usage?subject={ME}"),
            ("DELETE", f"/overrides?subject={ME}"),
        ):
            r = await client.request(method, ADMIN + path, headers=tenant)
            assert r.status_code == 403, (method, path, r.text)
        r = await client.put(
            f"{ADMIN}/overrides", json={"subject": ME, "rate": "1/minute"}, headers=tenant
        )
        assert r.status_code == 403
        assert (await client.get(f"{ADMIN}/limits")).status_code == 401
        limits = (await client.get(f"{ADMIN}/limits", headers=admin)).json()
    assert limits["default"] == {
        "name": "default",
        "limits": [{"limit": 110, "windowS": 60}, {"limit": 200, "windowS": 120}],
    }
    assert (limits["strategy"], limits["storage"], limits["keysHashed"]) == (
        "fixed-window",
        "memory",
        True,
    )
    assert limits["headers"] == "ietf"
    assert "/health" in limits["exempt"]


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"RATE_LIMIT_MAX": "0"}, "RATE_LIMIT_MAX"),
        ({"RATE_LIMIT_ENDPOINTS": "GET /items=lots"}, "RATE_LIMIT_ENDPOINTS"),
        ({"RATE_LIMIT_ENDPOINTS": "items=5/minute"}, "RATE_LIMIT_ENDPOINTS"),
        ({"RATE_LIMIT_STRATEGY": "token-bucket"}, "RATE_LIMIT_STRATEGY"),
        ({"RATE_LIMIT_TRUSTED_PROXIES": "10.0.0.0/33"}, "RATE_LIMIT_TRUSTED_PROXIES"),
        ({"RATE_LIMIT_FORWARDED_HEADER": "x-real-ip"}, "RATE_LIMIT_FORWARDED_HEADER"),
        ({"RATE_LIMIT_FAIL_CLOSED": "/pay"}, "RATE_LIMIT_FAIL_CLOSED"),
        ({"RATE_LIMIT_TIMEOUT_MS": "0"}, "RATE_LIMIT_TIMEOUT_MS"),
        ({"RATE_LIMIT_STORAGE_URL": "postgresql://x/y"}, "RATE_LIMIT_STORAGE_URL"),
        ({"RATE_LIMIT_KEY_HEADER": "x api key"}, "RATE_LIMIT_KEY_HEADER"),
        ({"RATE_LIMIT_IPV6_PREFIX": "129"}, "RATE_LIMIT_IPV6_PREFIX"),
        ({"RATE_LIMIT_IPV6_PREFIX": "/64"}, "RATE_LIMIT_IPV6_PREFIX"),
        ({"RATE_LIMIT_HEADERS": "x-ratelimit"}, "RATE_LIMIT_HEADERS"),
    ],
)
def test_a_bad_rate_limit_setting_fails_at_start_up_naming_it(
    env: dict[str, str], variable: str
) -> None:
    with pytest.raises(ConfigError, match=variable):
        Monitor.from_env(env)


async def test_an_infinite_expiry_is_refused_too() -> None:
    monitor = monitor_of()
    async for client in opened(monitor):
        r = await client.put(
            f"{ADMIN}/overrides",
            content=b'{"subject": "user:alice", "rate": "5/minute", "expiresAt": 1e999}',
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 422, r.text
        assert r.json()["error"]["details"][0]["field"] == "expiresAt"
        assert await monitor.storage.rate_limit_overrides() == []


@pytest.mark.parametrize(
    ("raw", "mode"),
    [("ietf", "ietf"), ("ALL", "all"), ("true", "all"), ("off", "none"), (" None ", "none")],
)
def test_the_headers_setting_reads_a_mode_or_a_boolean(raw: str, mode: str) -> None:
    assert Monitor.from_env({"RATE_LIMIT_HEADERS": raw}).settings.rate_limit_headers == mode
