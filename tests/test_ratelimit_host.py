"""The host app's rate limit, applied by its middleware: exact under concurrency on memory and
Redis, honest about keys, and never the cause of an outage."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from limits import parse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from asgimon import MemoryStorage, Monitor
from asgimon.events import ApiCall
from asgimon.ratelimit.keys import ClientAddress, parse_networks
from asgimon.ratelimit.limiter import RateLimiter
from asgimon.ratelimit.middleware import Denial, RateLimitMiddleware
from asgimon.ratelimit.policy import Policy, Rule, default_rule, parse_endpoint_rules
from asgimon.testing import recorded

from .asgi import http_scope, run
from .conftest import REDIS_URL, redis_prefix
from .limit_headers import remaining, standing
from .pg_cluster import free_port
from .served import serving


async def ok(request: Request) -> Response:
    return PlainTextResponse("ok", headers={"x-app": "mine"})


async def own_limits(request: Request) -> Response:
    return PlainTextResponse("mine", headers={"RateLimit": '"app";r=7;t=1'})


async def ws(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.close()


def host() -> Starlette:
    return Starlette(
        routes=[
            Route("/items/{id}", ok),
            Route("/health", ok),
            Route("/pay", ok, methods=["POST"]),
            Route("/own", own_limits),
            WebSocketRoute("/ws", ws),
        ]
    )


def limited(
    limiter: RateLimiter, *, maximum: int = 5, burst: int = 0, **options: Any
) -> RateLimitMiddleware:
    policy = Policy(
        default_rule(maximum, 60, burst),
        parse_endpoint_rules(options.pop("endpoints", "")),
        ["/health"],
    )
    return RateLimitMiddleware(host(), limiter=limiter, policy=policy, **options)


def client(app: Any, peer: str = "203.0.113.9") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 4000))
    return httpx.AsyncClient(transport=transport, base_url="http://t")


async def hundred(app: Any, path: str = "/items/1", **kw: Any) -> list[httpx.Response]:
    async with client(app) as c:
        return list(await asyncio.gather(*(c.get(path, **kw) for _ in range(100))))


def check_exactly_five(answers: list[httpx.Response], every: bool = False) -> None:
    """Five allowed, each with its own count in its headers (the X-RateLimit trio too when
    ``every``), and 95 refused with all of them."""
    statuses = Counter(r.status_code for r in answers)
    assert statuses == {200: 5, 429: 95}
    allowed = [r for r in answers if r.status_code == 200]
    assert sorted(remaining(r) for r in allowed) == [0, 1, 2, 3, 4]
    for r in allowed:
        assert r.text == "ok"
        assert r.headers["x-app"] == "mine"  # the app's own response, headers added
        assert r.headers["ratelimit-policy"] == '"default";q=5;w=60'
        name, left, reset = standing(r)
        assert name == "default"
        assert 0 <= reset <= 60
        assert "retry-after" not in r.headers
        if every:
            assert r.headers["x-ratelimit-limit"] == "5"
            assert r.headers["x-ratelimit-remaining"] == str(left)
            assert r.headers["x-ratelimit-reset"] == str(reset)
        else:
            assert not any(h.startswith("x-ratelimit") for h in r.headers)
    for r in answers:
        if r.status_code == 429:
            body = r.json()
            assert body["error"]["code"] == "rate_limited"
            assert body["limit"] == "default"
            assert body["error"]["details"] == [{"field": "limit", "message": "5 per 60 seconds"}]
            assert 1 <= int(r.headers["retry-after"]) == body["retryAfter"] <= 60
            assert r.headers["x-ratelimit-remaining"] == "0"
            assert r.headers["x-ratelimit-limit"] == "5"
            assert standing(r)[1] == 0


@pytest.mark.parametrize("strategy", ["fixed-window", "moving-window", "sliding-window-counter"])
async def test_a_hundred_at_once_against_five_a_minute_allow_five_in_memory(
    strategy: str,
) -> None:
    check_exactly_five(await hundred(limited(RateLimiter("1/second", strategy=strategy))))


def wrapped_at_five(**settings: Any) -> tuple[Monitor, Any, Any]:
    """The host app as ``monitor.wrap`` limits it to five a minute; and the limit's gate."""
    monitor = Monitor(
        storage=MemoryStorage(),
        api_rate_limit=None,
        rate_limit_max=5,
        rate_limit_burst=0,
        **settings,
    )
    app = monitor.wrap(host())
    layer = monitor.rate_limits.middleware
    assert layer is not None
    return monitor, app, monitor.gate(layer)


async def test_in_memory_the_monitors_middleware_asks_the_limit_itself_and_keeps_its_word() -> None:
    # Counted in memory, the limit is asked in the monitor's middleware's frame, its headers
    # added by that middleware's send: the same answers as the limit's own layer gives.
    monitor, app, gate = wrapped_at_five(flush_interval=0.01, api_call_sample_rate=1.0)
    assert gate is monitor.rate_limits.middleware
    async with monitor:
        check_exactly_five(await hundred(app))
        async with client(app, peer="203.0.113.10") as c:
            own = await c.get("/own")  # the app's own limit header wins over ours
            assert (own.text, own.headers["ratelimit"]) == ("mine", '"app";r=7;t=1')
            assert "ratelimit-policy" not in own.headers
        calls = await recorded(monitor, "api_call")
    statuses = Counter(c.status for c in calls if isinstance(c, ApiCall))
    assert statuses == {200: 6, 429: 95}  # each refusal recorded as the 429 it was
    assert monitor.rate_limits.report()["refused"] == 95


async def test_counted_in_redis_the_limit_stays_a_layer_of_its_own() -> None:
    async for prefix in redis_prefix():
        monitor, app, gate = wrapped_at_five(
            rate_limit_storage_url=REDIS_URL, rate_limit_timeout_ms=2000, redis_key_prefix=prefix
        )
        assert gate is None
        async with monitor:
            check_exactly_five(await hundred(app))


def limiter_at(where: str, strategy: str, prefix: str) -> RateLimiter:
    """A limiter counting in memory or in the loopback Redis under ``prefix``."""
    redis_url = REDIS_URL if where == "redis" else None
    # Under a loaded machine the default 100 ms timeout rightly lets requests through.
    return RateLimiter(redis_url=redis_url, key_prefix=prefix, strategy=strategy, timeout=2)


@pytest.fixture
async def redis_limiter() -> AsyncIterator[RateLimiter]:
    async for prefix in redis_prefix():
        limiter = RateLimiter(
            "1/second",
            redis_url=REDIS_URL,
            key_prefix=prefix,
            namespace="h",
            strategy="fixed-window",
            timeout=2,  # under a loaded machine the default 100 ms rightly lets requests through
        )
        yield limiter
        await limiter.aclose()


async def test_a_hundred_at_once_against_five_a_minute_allow_five_on_redis(
    redis_limiter: RateLimiter,
) -> None:
    # With every header on allowed responses too (RATE_LIMIT_HEADERS=all).
    check_exactly_five(await hundred(limited(redis_limiter, headers="all")), every=True)
    assert redis_limiter.bypassed == 0


@pytest.mark.parametrize("strategy", ["sliding-window-counter", "moving-window"])
async def test_on_redis_the_other_strategies_allow_five_too(strategy: str) -> None:
    # One script per request, so what remains is each request's own here too: exact.
    async for prefix in redis_prefix():
        limiter = RateLimiter(
            "1/second", redis_url=REDIS_URL, key_prefix=prefix, strategy=strategy, timeout=2
        )
        try:
            answers = await hundred(limited(limiter))
        finally:
            await limiter.aclose()
        assert limiter.bypassed == 0
        check_exactly_five(answers)


async def test_burst_allows_more_at_once_and_cost_spends_several() -> None:
    answers = await hundred(limited(RateLimiter("1/second"), burst=2))
    assert Counter(r.status_code for r in answers) == {200: 7, 429: 93}
    weighed = limited(RateLimiter("1/second"), cost=lambda scope: 2)
    answers = await hundred(weighed)
    assert Counter(r.status_code for r in answers) == {200: 2, 429: 98}


async def test_endpoint_rules_exemptions_and_keys_per_client() -> None:
    app = limited(RateLimiter("1/second"), endpoints="POST /pay=2/minute")
    async with client(app) as c:
        paid = [await c.post("/pay") for _ in range(4)]
        assert [r.status_code for r in paid] == [200, 200, 429, 429]
        assert paid[0].headers["ratelimit-policy"] == '"POST /pay";q=2;w=60'
        health = [await c.get("/health") for _ in range(20)]
        assert {r.status_code for r in health} == {200}
        assert "ratelimit" not in health[0].headers
    # Each client address, API key and user has its own count.
    async with client(app, peer="198.51.100.1") as other:
        assert (await other.post("/pay")).status_code == 200
    by_key = limited(
        RateLimiter("1/second"), endpoints="POST /pay=2/minute", key_header="X-API-Key"
    )
    async with client(by_key) as c:
        keyed = [await c.post("/pay", headers={"x-api-key": "k-1"}) for _ in range(3)]
        assert [r.status_code for r in keyed] == [200, 200, 429]
        assert (await c.post("/pay", headers={"x-api-key": "k-2"})).status_code == 200


async def test_endpoint_templates_match_the_path_below_the_apps_root_path() -> None:
    app = limited(RateLimiter("1/second"), maximum=50, endpoints="GET /items/{id}=1/minute")
    scope = {**http_scope("/api/items/7"), "root_path": "/api"}
    codes = []
    for _ in range(2):
        sent = await run(app, scope, [{"type": "http.request", "body": b""}])
        codes.append(sent[0]["status"])
    assert codes == [200, 429]
    health = {**http_scope("/api/health"), "root_path": "/api"}  # exempt below the root too
    for _ in range(60):
        sent = await run(app, health, [{"type": "http.request", "body": b""}])
        assert sent[0]["status"] == 200
        assert b"ratelimit" not in dict(sent[0]["headers"])


async def test_a_spoofed_forwarded_for_changes_nothing_unless_from_a_trusted_proxy() -> None:
    app = limited(RateLimiter("1/second"))
    async with client(app) as c:
        spoofed = [
            await c.get("/items/1", headers={"x-forwarded-for": f"10.0.0.{i}"}) for i in range(8)
        ]
    assert [r.status_code for r in spoofed].count(200) == 5
    trusting = limited(
        RateLimiter("1/second"), client=ClientAddress(parse_networks(["127.0.0.0/8"]))
    )
    async with client(trusting, peer="127.0.0.1") as proxy:
        forwarded = [
            await proxy.get("/items/1", headers={"x-forwarded-for": f"198.51.100.{i}"})
            for i in range(8)
        ]
    assert [r.status_code for r in forwarded].count(200) == 8  # eight clients behind it


async def test_an_ipv6_client_counts_by_its_64_not_each_address_it_picks() -> None:
    rotating = [f"2001:db8:1:2::{i:x}" for i in range(1, 9)]  # one /64, eight addresses
    app = limited(RateLimiter("1/second"), client=ClientAddress(ipv6_prefix=64))
    codes = []
    for peer in rotating:
        async with client(app, peer=peer) as c:
            codes.append((await c.get("/items/1")).status_code)
    assert codes.count(200) == 5
    async with client(app, peer="2001:db8:1:3::1") as c:  # the next /64: its own bucket
        assert (await c.get("/items/1")).status_code == 200
    assert ClientAddress(ipv6_prefix=64)({"client": ("2001:db8:1:2::9", 1)}) == (
        "2001:db8:1:2::/64"
    )
    # 128 counts each address apart; IPv4 (mapped or not) is always its own address.
    apart = limited(RateLimiter("1/second"), client=ClientAddress(ipv6_prefix=128))
    for peer in rotating:
        async with client(apart, peer=peer) as c:
            assert (await c.get("/items/1")).status_code == 200
    assert ClientAddress(ipv6_prefix=64)({"client": ("::ffff:198.51.100.7", 1)}) == ("198.51.100.7")
    # Behind a trusted proxy, the forwarded IPv6 client is keyed by its network too.
    proxied = ClientAddress(parse_networks(["10.0.0.0/8"]), ipv6_prefix=56)
    scope = {"client": ("10.0.0.1", 1), "headers": [(b"x-forwarded-for", b"2001:db8:1:2ff::7")]}
    assert proxied(scope) == "2001:db8:1:200::/56"


async def test_shadow_mode_reports_would_be_denials_and_enforces_none() -> None:
    heard: list[Denial] = []
    app = limited(
        RateLimiter("1/second"), shadow=True, report=lambda denial, scope: heard.append(denial)
    )
    answers = await hundred(app)
    assert {r.status_code for r in answers} == {200}
    assert len(heard) == 95
    assert all(d.shadow and d.rule.name == "default" and len(d.key) == 32 for d in heard)
    assert app.shadow_denied == 95
    assert app.denied == 0


async def test_with_its_store_down_it_fails_open_or_closed_as_configured() -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    limiter = RateLimiter("1/second", redis_url=dead, timeout=0.05)
    app = limited(limiter, endpoints="POST /pay=2/minute", fail_closed=frozenset({"POST /pay"}))
    try:
        answers = await hundred(app)
        assert {r.status_code for r in answers} == {200}
        assert limiter.bypassed >= 100
        assert limiter.breaker.is_open
        async with client(app) as c:
            refused = await c.post("/pay")
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "5"
        assert refused.json()["error"]["code"] == "rate_limiter_unavailable"
    finally:
        await limiter.aclose()


async def test_websocket_connections_are_limited_too() -> None:
    app = limited(RateLimiter("1/second"), maximum=2)
    scope = {**http_scope("/ws"), "type": "websocket", "scheme": "ws", "subprotocols": []}
    outcomes = []
    for _ in range(3):
        sent = await run(app, scope, [{"type": "websocket.connect"}])
        outcomes.append(
            sent[0]["type"] if sent[0]["type"] == "websocket.accept" else sent[0]["code"]
        )
    assert outcomes == ["websocket.accept", "websocket.accept", 1008]
    # Where the server offers the denial-response extension, the refusal is a real 429.
    offered = {**scope, "extensions": {"websocket.http.response": {}}}
    denied = await run(app, offered, [{"type": "websocket.connect"}])
    assert denied[0]["type"] == "websocket.http.response.start"
    assert denied[0]["status"] == 429
    assert dict(denied[0]["headers"])[b"retry-after"] >= b"1"
    assert denied[1]["type"] == "websocket.http.response.body"
    assert json.loads(denied[1]["body"])["error"]["code"] == "rate_limited"


async def test_a_refused_request_spends_nothing_and_a_big_cost_does_not_overshoot() -> None:
    limiter = RateLimiter("1/second", strategy="fixed-window")
    app = limited(limiter, maximum=5, cost=lambda scope: int(scope["path"].rsplit("/", 1)[1]))
    async with client(app) as c:
        assert (await c.get("/items/3")).status_code == 200  # 2 left
        big = await c.get("/items/5")
        assert big.status_code == 429
        assert remaining(big) == 2  # the refusal cost nothing
        assert [(await c.get("/items/1")).status_code for _ in range(3)] == [200, 200, 429]


async def test_what_the_review_of_the_limiter_found_stays_fixed() -> None:
    # The proxies' own header only: a client's Forwarded through an XFF proxy is ignored.
    trusting = ClientAddress(parse_networks(["10.0.0.0/8"]))
    scope = {
        "client": ("10.0.0.1", 1),
        "headers": [(b"forwarded", b"for=6.6.6.6"), (b"x-forwarded-for", b"198.51.100.7")],
    }
    assert trusting(scope) == "198.51.100.7"
    assert trusting({"client": ("::ffff:10.0.0.1", 1), "headers": []}) == "10.0.0.1"
    # An API key header is no key unless one is named: random ones are no way around it.
    app = limited(RateLimiter("1/second"), maximum=2)
    async with client(app) as c:
        codes = [
            (await c.get("/items/1", headers={"x-api-key": f"k{i}"})).status_code for i in range(3)
        ]
    assert codes == [200, 200, 429]

    # A tier never lifts an exemption; a failing cost or tier callback is no 500.
    def broken(scope: Any) -> Any:
        raise RuntimeError("host bug")

    app = limited(RateLimiter("1/second"), maximum=1, tier=broken, cost=broken)
    async with client(app) as c:
        assert [(await c.get("/health")).status_code for _ in range(3)] == [200, 200, 200]
        assert [(await c.get("/items/1")).status_code for _ in range(2)] == [200, 429]
    assert app.callback_failures >= 4
    # HEAD is held to a GET rule; shadow mode adds no headers.
    app = limited(RateLimiter("1/second"), endpoints="GET /items/{id}=1/minute")
    async with client(app) as c:
        assert [(await c.head("/items/1")).status_code for _ in range(2)] == [200, 429]
    shadow = limited(RateLimiter("1/second"), shadow=True)
    async with client(shadow) as c:
        assert "ratelimit" not in (await c.get("/items/1")).headers


@pytest.mark.parametrize("strategy", ["fixed-window", "sliding-window-counter", "moving-window"])
@pytest.mark.parametrize("where", ["memory", "redis"])
async def test_a_refused_request_spends_nothing_against_any_limit_of_its_rule(
    where: str, strategy: str
) -> None:
    # The burst's two limits: 4 in one window, 6 in two. The 5th request is refused by the
    # first and must not have been counted against the second. Usage is read back the way
    # the administration reads it (on Redis's sliding window, through limits' own calls).
    rule = default_rule(3, 60, 1)
    async for prefix in redis_prefix():
        limiter = limiter_at(where, strategy, prefix)
        try:
            verdicts = [await limiter.decide(rule, "k") for _ in range(6)]
            usage = await limiter.usage(rule, "k")
            assert await limiter.reset(rule, "k")
            after = await limiter.usage(rule, "k")
        finally:
            await limiter.aclose()
        assert [v.allowed for v in verdicts if v] == [True] * 4 + [False] * 2
        assert [v.remaining for v in verdicts if v] == [3, 2, 1, 0, 0, 0]
        assert [v.index for v in verdicts if v] == [0] * 6
        assert usage is not None
        assert [(u.limit, u.limit - u.remaining) for u in usage] == [(4, 4), (6, 4)]
        assert 1 <= verdicts[-1].reset_s <= 60  # type: ignore[union-attr]
        assert after is not None
        assert [u.remaining for u in after] == [4, 6]


def test_late_failures_of_calls_in_flight_do_not_stretch_the_breakers_wait() -> None:
    from asgimon.breaker import CircuitBreaker

    breaker = CircuitBreaker(threshold=5, base=1.0)
    for _ in range(12):  # twelve calls that were in flight when the store hung
        breaker.failure()
    assert breaker.is_open
    assert breaker.opened == 1
    breaker._retry_at = 0.0  # the wait is up: one trial
    assert breaker.allow()
    assert not breaker.allow()
    breaker.failure()  # the trial failed: twice the wait
    assert breaker.opened == 2
    breaker._retry_at = 0.0
    assert breaker.allow()
    breaker.success()
    assert not breaker.is_open
    assert breaker.allow()


def test_an_ipv6_subject_names_the_network_its_address_counts_in() -> None:
    from asgimon.ratelimit.host import SubjectError, parse_subject

    assert parse_subject("addr:2001:db8:1:2::9", 64) == "addr:2001:db8:1:2::/64"
    assert parse_subject("addr:2001:db8:1:2::/64", 64) == "addr:2001:db8:1:2::/64"
    assert parse_subject("addr:2001:db8:1:2::9", 128) == "addr:2001:db8:1:2::9"
    assert parse_subject("addr:::ffff:198.51.100.7", 64) == "addr:198.51.100.7"
    with pytest.raises(SubjectError):
        parse_subject("addr:2001:db8::/48", 64)


async def test_an_override_on_an_ipv6_address_holds_for_its_whole_network() -> None:
    from asgimon.ratelimit.host import HostLimits
    from asgimon.settings import Settings
    from asgimon.storage.memory import MemoryStorage

    limits = HostLimits(Settings.from_env({}), MemoryStorage(), put=lambda event: None)
    app = limits.wrap(host())
    await limits.set_override("addr:2001:db8:1:2::9", "2/minute")
    async with client(app, peer="2001:db8:1:2::1") as c:
        codes = [(await c.get("/items/1")).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    async with client(app, peer="2001:db8:1:3::1") as c:  # another /64: the default limit
        assert [(await c.get("/items/1")).status_code for _ in range(3)] == [200] * 3
    await limits.close()


async def test_over_a_real_server_a_websocket_over_its_limit_gets_a_429() -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    app = limited(RateLimiter("1/second"), maximum=2)
    async with serving(app, ws="websockets-sansio") as port, asyncio.timeout(10):
        for _ in range(2):
            async with connect(f"ws://127.0.0.1:{port}/ws"):
                pass
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"ws://127.0.0.1:{port}/ws"):
                pass
    response = refused.value.response
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert json.loads(response.body)["error"]["code"] == "rate_limited"


@pytest.mark.parametrize(
    ("strategy", "where"),
    [
        ("fixed-window", "memory"),
        ("moving-window", "memory"),
        ("sliding-window-counter", "memory"),
        ("fixed-window", "redis"),
        ("sliding-window-counter", "redis"),
        ("moving-window", "redis"),
    ],
)
async def test_the_headers_name_the_limit_that_decides(strategy: str, where: str) -> None:
    # Ten a minute and three an hour: the hour's limit has the fewest left, so it decides.
    async for prefix in redis_prefix():
        limiter = limiter_at(where, strategy, prefix)
        app = limited(limiter, endpoints="POST /pay=10/minute, 3/hour")
        try:
            async with client(app) as c:
                answers = [await c.post("/pay") for _ in range(4)]
        finally:
            await limiter.aclose()
        assert [r.status_code for r in answers] == [200, 200, 200, 429]
        policy = '"POST /pay";q=10;w=60, "POST /pay/3600s";q=3;w=3600'
        assert {r.headers["ratelimit-policy"] for r in answers} == {policy}
        assert [standing(r)[:2] for r in answers] == [
            ("POST /pay/3600s", 2),
            ("POST /pay/3600s", 1),
            ("POST /pay/3600s", 0),
            ("POST /pay/3600s", 0),
        ]
        assert answers[3].headers["x-ratelimit-limit"] == "3"


async def test_on_redis_the_last_window_still_counts_by_what_is_left_of_it() -> None:
    # 10 per 4 s: six spent, then 4.4 s later they are the previous window, still weighing
    # about 6 * 3.6 / 4 = 5.4 (counted down to 5), so five more fit and a sixth does not;
    # limits, reading the same keys, sees what the verdicts said.
    rule = Rule("r", (parse("10 per 4 seconds"),))
    async for prefix in redis_prefix():
        limiter = limiter_at("redis", "sliding-window-counter", prefix)
        try:
            first = [await limiter.decide(rule, "k") for _ in range(6)]
            await asyncio.sleep(4.4)
            then = [await limiter.decide(rule, "k") for _ in range(6)]
            usage = await limiter.usage(rule, "k")
        finally:
            await limiter.aclose()
        assert all(v is not None and v.allowed for v in first)
        assert [v.allowed for v in then if v] == [True] * 5 + [False]
        assert [v.remaining for v in then if v] == [4, 3, 2, 1, 0, 0]
        assert usage is not None
        assert usage[0].remaining == 0
