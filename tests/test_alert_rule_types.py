"""Each rule type fires on real traffic and events, and resolves, at the moment it should."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

import pytest

from asgimon.events import ErrorEvent

from .alerting import API, Shop, open_shop


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    async for s in open_shop():
        yield s


async def test_error_count_fires_over_its_threshold_and_resolves_when_the_window_is_clean(
    shop: Shop,
) -> None:
    rule = await shop.rule(type="error_count", threshold=2, window=300)
    await shop.client.get("/boom")
    await shop.client.get("/boom")
    await shop.evaluate()
    assert (await shop.state(rule)).status == "ok"  # 2 is not above 2

    await shop.client.get("/boom")
    now = time.time()
    await shop.evaluate(now)
    state = await shop.state(rule)
    assert state.status == "firing"
    assert state.value == 3
    (note,) = await shop.inbox(rule)
    assert note.body["status"] == "firing"
    assert note.body["summary"] == "Errors in a window is 3 errors (threshold 2 errors)"

    await shop.evaluate(now + 120)  # still within the window: still firing, not told again
    assert (await shop.state(rule)).status == "firing"
    assert len(await shop.inbox(rule)) == 1

    await shop.evaluate(now + 360)  # the window has moved past the errors
    assert (await shop.state(rule)).status == "resolved"
    notes = await shop.inbox(rule)
    assert [n.body["status"] for n in notes] == ["firing", "resolved"]
    assert notes[1].body["suppressed"] == 1
    assert await shop.transitions(rule) == ["firing", "resolved"]


async def test_the_severity_filter_counts_only_that_severity(shop: Shop) -> None:
    rule = await shop.rule(type="error_count", threshold=0, filters={"severity": "critical"})
    await shop.client.get("/boom")  # captured as high
    await shop.evaluate()
    assert (await shop.state(rule)).status == "ok"
    shop.monitor.capture_exception(ValueError("disk"), severity="critical")
    await shop.evaluate()
    assert (await shop.state(rule)).status == "firing"


async def test_error_rate_is_the_share_of_5xx_answers(shop: Shop) -> None:
    rule = await shop.rule(type="error_rate", threshold=30, window=300)
    everywhere = await shop.rule(
        type="error_rate", threshold=30, filters={"endpoint": "/ok", "method": "GET"}
    )
    for path in ("/boom", "/ok", "/ok"):
        await shop.client.get(path)
    now = time.time()
    await shop.evaluate(now)
    state = await shop.state(rule)
    assert state.status == "firing"
    assert state.value == pytest.approx(100 / 3)
    assert (await shop.state(everywhere)).status == "ok"  # /ok alone never failed
    await shop.evaluate(now + 360)
    assert (await shop.state(rule)).status == "resolved"


async def test_an_error_spike_is_more_than_twice_the_previous_window(shop: Shop) -> None:
    rule = await shop.rule(type="error_spike", threshold=2, window=300)
    now = time.time()
    for i in range(3):  # the previous window: 3 errors
        ev = ErrorEvent(timestamp=now - 400 - i, fingerprint="old", severity="high")
        shop.monitor.recorder.put(ev)
    for _ in range(6):
        await shop.client.get("/boom")
    await shop.evaluate(now)
    assert (await shop.state(rule)).status == "ok"  # 6 is twice 3, not more

    await shop.client.get("/boom")
    await shop.evaluate(now)
    state = await shop.state(rule)
    assert state.status == "firing"
    assert state.value == pytest.approx(7 / 3)
    await shop.evaluate(now + 360)  # now the 7 are the previous window
    assert (await shop.state(rule)).status == "resolved"


async def test_a_critical_error_fires_as_it_is_stored_and_resolves_after_a_quiet_window(
    shop: Shop,
) -> None:
    rule = await shop.rule(type="critical_error", window=600)
    shop.monitor.capture_exception(ValueError("minor"), severity="high")
    await shop.settle()
    assert (await shop.state(rule)).status == "ok"

    shop.monitor.capture_exception(ValueError("the ledger is corrupt"), severity="critical")
    await shop.settle()  # no evaluation period needed: the event path fired it
    state = await shop.state(rule)
    assert state.status == "firing"
    (note,) = await shop.inbox(rule)
    assert note.body["labels"]["errorType"] == "ValueError"

    await shop.evaluate(time.time() + 300)
    assert (await shop.state(rule)).status == "firing"
    await shop.evaluate(time.time() + 601)
    assert (await shop.state(rule)).status == "resolved"


async def test_a_new_error_group_fires_once_per_new_group(shop: Shop) -> None:
    rule = await shop.rule(type="new_error_group", repeatInterval=60)
    await shop.client.get("/boom")
    await shop.settle()
    assert (await shop.state(rule)).status == "firing"
    await shop.client.get("/boom")  # the same group again: nothing new
    await shop.settle()
    (note,) = await shop.inbox(rule)
    assert note.body["labels"]["errorType"] == "RuntimeError"
    assert note.body["labels"]["message"] == "the cart is on fire"


async def test_a_resolved_group_that_comes_back_is_a_regression(shop: Shop) -> None:
    rule = await shop.rule(type="error_regression")
    await shop.client.get("/boom")
    await shop.settle()
    assert (await shop.state(rule)).status == "ok"
    listed = (await shop.client.get(f"{API}/errors/default")).json()
    fp = listed["groups"][0]["fingerprint"]
    r = await shop.client.post(f"{API}/errors/default/groups/{fp}/resolve")
    assert r.status_code == 200
    await shop.client.get("/boom")
    await shop.settle()
    assert (await shop.state(rule)).status == "firing"
    (note,) = await shop.inbox(rule)
    assert note.body["labels"]["fingerprint"] == fp


async def test_deployment_rules_fire_on_failures_rates_and_slow_deployments(shop: Shop) -> None:
    failed = await shop.rule(type="deployment_failure", filters={"framework": "nextjs"})
    rate = await shop.rule(type="deployment_failure_rate", threshold=10, window=3600)
    slow = await shop.rule(type="slow_deployment")  # default: above 10 minutes
    m = shop.monitor
    await m.record_deployment_event("d1", "completed", status="success", duration_ms=60_000)
    await m.record_deployment_event("d2", "completed", status="failure", framework="vite")
    await shop.evaluate()
    assert (await shop.state(failed)).status == "ok"  # another framework
    assert (await shop.state(rate)).status == "firing"
    assert (await shop.state(rate)).value == 50
    assert (await shop.state(slow)).status == "ok"

    await m.record_deployment_event("d3", "completed", status="failure", framework="nextjs")
    await m.record_deployment_event("d4", "completed", status="success", duration_ms=700_000)
    await shop.settle()
    assert (await shop.state(failed)).status == "firing"
    slow_state = await shop.state(slow)
    assert slow_state.status == "firing"
    assert slow_state.value == 700_000


async def test_function_rules_fire_on_errors_error_rates_and_slowness(shop: Shop) -> None:
    failed = await shop.rule(type="function_error", filters={"function": "resize"})
    rate = await shop.rule(type="function_error_rate", threshold=5, window=3600)
    slow = await shop.rule(type="slow_function", threshold=500, window=300, statistic="p95")
    on_average = await shop.rule(type="slow_function", threshold=500, window=300)
    m = shop.monitor
    for ms in [100] * 18 + [900] * 2:
        await m.record_function_invocation("resize", duration_ms=ms)
    await shop.evaluate()
    assert (await shop.state(slow)).status == "firing"  # its p95 is one of the 900 ms ones
    assert (await shop.state(on_average)).status == "ok"  # the average is 180 ms
    assert (await shop.state(rate)).status == "ok"
    await m.record_function_invocation("send", duration_ms=5, status="error", error_type="E")
    await shop.evaluate()
    assert (await shop.state(failed)).status == "ok"  # another function
    assert (await shop.state(rate)).status == "ok"  # 1 in 21 is under 5 %
    for _ in range(2):
        await m.record_function_invocation("send", duration_ms=5, status="error", error_type="E")
    await shop.evaluate()
    fired = await shop.state(rate)
    assert fired.status == "firing"
    assert fired.value == pytest.approx(300 / 23)
    await m.record_function_invocation("resize", duration_ms=5, status="error", error_type="E")
    await shop.settle()
    assert (await shop.state(failed)).status == "firing"


async def test_api_latency_per_endpoint_by_average_or_p95(shop: Shop) -> None:
    overall = await shop.rule(type="api_latency", threshold=20, window=300)
    slow_only = await shop.rule(
        type="api_latency", threshold=20, statistic="p95", filters={"endpoint": "/slow"}
    )
    ok_only = await shop.rule(type="api_latency", threshold=20, filters={"endpoint": "/ok"})
    for _ in range(5):
        await shop.client.get("/ok")
    await shop.client.get("/slow")
    now = time.time()
    await shop.evaluate(now)
    assert (await shop.state(overall)).status == "ok"  # 5 fast answers pull the average down
    latency = await shop.state(slow_only)
    assert latency.status == "firing"
    assert latency.value is not None
    assert latency.value >= 25
    assert (await shop.state(ok_only)).status == "ok"
    await shop.evaluate(now + 360)
    assert (await shop.state(slow_only)).status == "resolved"


async def test_build_slowdown_compares_with_the_previous_period(shop: Shop) -> None:
    rule = await shop.rule(type="build_slowdown", threshold=1.5, window=3600)
    now = time.time()
    for i, seconds in enumerate((10, 10, 30, 30)):
        at = now - 5400 + i * 10 if i < 2 else now - 60 + i
        await shop.monitor.record_build_event(
            f"d{i}", "build", start_time=at, end_time=at + seconds, framework="vite"
        )
    await shop.evaluate(now)
    state = await shop.state(rule)
    assert state.status == "firing"
    assert state.value == pytest.approx(3.0)


async def test_a_certificate_that_fails_or_expires_soon_fires(shop: Shop) -> None:
    rule = await shop.rule(type="ssl_certificate", threshold=14, filters={"domain": "shop.example"})
    m = shop.monitor
    in_60_days = time.time() + 60 * 86_400
    await m.record_domain_event("shop.example", "ssl_issued", expires_at=in_60_days)
    await m.record_domain_event("other.example", "ssl_failed")
    await shop.settle()
    assert (await shop.state(rule)).status == "ok"
    await m.record_domain_event("shop.example", "ssl_expiring", expires_at=time.time() + 3 * 86_400)
    await shop.settle()
    state = await shop.state(rule)
    assert state.status == "firing"
    assert state.value == pytest.approx(3, abs=0.01)  # days left


async def test_rate_limit_denials_over_a_threshold_fire() -> None:
    async for shop in open_shop(rate_limit_enabled=True, rate_limit_max=2, rate_limit_burst=0):
        rule = await shop.rule(type="rate_limit_denials", threshold=5, window=300)
        statuses = [(await shop.client.get("/ok")).status_code for _ in range(10)]
        assert statuses.count(429) == 8
        await shop.evaluate()
        state = await shop.state(rule)
        assert state.status == "firing"
        assert state.value == 8


async def test_a_pending_duration_holds_the_alert_back_until_it_lasts(shop: Shop) -> None:
    rule = await shop.rule(type="error_count", threshold=0, window=600, pendingFor=300)
    await shop.client.get("/boom")
    now = time.time()
    await shop.evaluate(now)
    assert (await shop.state(rule)).status == "pending"
    await shop.evaluate(now + 120)
    assert (await shop.state(rule)).status == "pending"
    assert await shop.inbox(rule) == []
    await shop.evaluate(now + 300)
    assert (await shop.state(rule)).status == "firing"
    assert await shop.transitions(rule) == ["pending", "firing"]


async def test_a_pending_alert_that_recovers_never_notifies(shop: Shop) -> None:
    rule = await shop.rule(type="error_count", threshold=0, window=300, pendingFor=600)
    await shop.client.get("/boom")
    now = time.time()
    await shop.evaluate(now)
    await shop.evaluate(now + 360)
    assert (await shop.state(rule)).status == "ok"
    assert await shop.transitions(rule) == ["pending", "ok"]
    assert await shop.inbox(rule) == []


async def test_a_firing_alert_repeats_after_its_interval_with_what_it_held_back(
    shop: Shop,
) -> None:
    rule = await shop.rule(type="error_count", threshold=0, window=3600, repeatInterval=600)
    await shop.client.get("/boom")
    now = time.time()
    for minutes in (0, 2, 4, 6, 8, 10):
        await shop.evaluate(now + minutes * 60)
    notes = await shop.inbox(rule)
    assert [n.body["status"] for n in notes] == ["firing", "firing"]
    assert notes[1].body["suppressed"] == 4


async def test_a_disabled_rule_is_not_judged_and_a_firing_one_is_set_back(shop: Shop) -> None:
    rule = await shop.rule(type="error_count", threshold=0)
    await shop.client.get("/boom")
    await shop.evaluate()
    assert (await shop.state(rule)).status == "firing"
    r = await shop.client.patch(f"{API}/alerts/{rule}", json={"enabled": False})
    assert r.status_code == 200
    await shop.evaluate()
    assert (await shop.state(rule)).status == "ok"
    await shop.client.get("/boom")
    await shop.evaluate()
    assert (await shop.state(rule)).status == "ok"
    assert len(await shop.inbox(rule)) == 1


async def test_memory_fires_when_a_sampled_process_grows_past_its_threshold() -> None:
    async for shop in open_shop(system_metrics_interval=1):
        rule = await shop.rule(type="memory", threshold=50_000, window=300)
        low = await shop.rule(type="memory", threshold=1, window=300, statistic="p95")
        for _ in range(150):  # until the sampler of this process has reported once
            await shop.settle()
            found = await shop.monitor.storage.events("system", limit=1)
            if found:
                break
            await asyncio.sleep(0.01)
        assert found, "the system sampler recorded nothing"
        now = time.time()
        await shop.evaluate(now)
        assert (await shop.state(rule)).status == "ok"  # nobody uses 50 GB
        state = await shop.state(low)
        assert state.status == "firing"  # every Python process is past 1 MB
        assert state.labels["process"].endswith(f"/{os.getpid()}")
        await shop.evaluate(now + 400)  # five minutes on, with no sample since
        assert (await shop.state(low)).status == "resolved"


async def test_a_one_minute_window_judged_as_a_minute_begins_sees_the_minute_just_ended(
    shop: Shop,
) -> None:
    rule = await shop.rule(type="error_count", threshold=5, window=60)
    minute = int(time.time()) // 60 * 60
    for i in range(6):  # in the minute that has just ended
        shop.monitor.recorder.put(ErrorEvent(timestamp=minute - 30 + i, fingerprint="f"))
    await shop.evaluate(minute + 0.005)  # as the scheduler runs, just past the period's start
    state = await shop.state(rule)
    assert state.status == "firing"
    assert state.value == 6
    await shop.evaluate(minute + 60.005)  # a whole minute on: out of the window
    assert (await shop.state(rule)).status == "resolved"
