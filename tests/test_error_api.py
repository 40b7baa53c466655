"""The errors API with lifecycle: filters, a group's detail, resolve / unresolve / ignore with
validation, regressions, and the link from errors to the deployment they happened in."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from asgimon import Monitor, Storage
from asgimon.errortracking.capture import Where, exception_event
from asgimon.errortracking.state import Transition

API = "/analytics/api"


class CartError(Exception):
    pass


def add_to_cart(item: str) -> None:
    raise CartError(f"item {item} is out of stock")


async def cart(request: Request) -> Response:
    add_to_cart(request.path_params["item"])
    return PlainTextResponse("never")


async def pay(request: Request) -> Response:
    raise ZeroDivisionError("split among 0 payers")


async def handled(request: Request) -> Response:
    monitor: Monitor = request.app.state.monitor
    try:
        {"cart": 1}["coupon"]
    except KeyError as exc:
        monitor.capture_exception(exc, severity="low")
    return PlainTextResponse("ok")


def host_app(monitor: Monitor) -> Starlette:
    app = Starlette(
        routes=[Route("/cart/{item}", cart), Route("/pay", pay), Route("/handled", handled)]
    )
    app.state.monitor = monitor
    return app


class Shop:
    def __init__(self, monitor: Monitor, client: httpx.AsyncClient) -> None:
        self.monitor = monitor
        self.client = client
        self.heard: list[Transition] = []

    async def settle(self) -> None:
        await settle_monitor(self.monitor)

    async def fail(self, path: str, times: int = 1) -> None:
        for _ in range(times):
            assert (await self.client.get(path)).status_code in (200, 500)
        await self.settle()

    async def errors(self, **params: str) -> dict[str, Any]:
        r = await self.client.get(f"{API}/errors/default", params=params)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    async def group_of(self, error_type: str) -> dict[str, Any]:
        groups = (await self.errors())["groups"]
        (group,) = [g for g in groups if g["type"].endswith(error_type)]
        found: dict[str, Any] = group
        return found

    async def act(self, fingerprint: str, action: str, body: Any = None) -> httpx.Response:
        return await self.client.post(
            f"{API}/errors/default/groups/{fingerprint}/{action}",
            json=body,
        )


@pytest.fixture
async def shop(storage: Storage) -> AsyncIterator[Shop]:
    monitor = Monitor(storage=storage, flush_interval=0.01, api_rate_limit=None)
    transport = httpx.ASGITransport(app=monitor.wrap(host_app(monitor)), raise_app_exceptions=False)
    async with monitor, httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        s = Shop(monitor, c)

        async def listener(t: Transition) -> None:
            s.heard.append(t)

        monitor.errors.lifecycle.listen(listener)
        yield s


async def test_resolve_then_a_recurrence_is_a_regression(shop: Shop) -> None:
    await shop.fail("/cart/1", 2)
    await shop.fail("/pay")
    cart_group = await shop.group_of("CartError")
    assert (cart_group["status"], cart_group["count"], cart_group["regressed"]) == (
        "unresolved",
        2,
        False,
    )
    r = await shop.act(cart_group["fingerprint"], "resolve")
    assert r.status_code == 200
    assert (r.json()["status"], r.json()["changedBy"], r.json()["version"]) == (
        "resolved",
        "local",
        2,
    )
    assert [g["type"] for g in (await shop.errors(status="resolved"))["groups"]] == [
        cart_group["type"]
    ]
    assert [g["type"] for g in (await shop.errors(status="unresolved"))["groups"]] == [
        "ZeroDivisionError"
    ]
    await shop.fail("/cart/2")
    again = await shop.group_of("CartError")
    assert (again["status"], again["regressed"], again["regressions"], again["count"]) == (
        "unresolved",
        True,
        1,
        3,
    )
    assert [g["fingerprint"] for g in (await shop.errors(status="regressed"))["groups"]] == [
        cart_group["fingerprint"]
    ]
    assert [t.kind for t in shop.heard] == ["new", "new", "regression"]
    r = await shop.act(cart_group["fingerprint"], "unresolve")
    assert (r.json()["status"], r.json()["regressions"]) == ("unresolved", 1)


async def test_ignore_for_a_count_then_it_is_unresolved_again(shop: Shop) -> None:
    await shop.fail("/pay")
    fp = (await shop.group_of("ZeroDivisionError"))["fingerprint"]
    r = await shop.act(fp, "ignore", {"count": 2})
    assert (r.json()["status"], r.json()["ignoreCount"]) == ("ignored", 2)
    await shop.fail("/pay")
    assert (await shop.group_of("ZeroDivisionError"))["status"] == "ignored"
    await shop.fail("/pay")
    group = await shop.group_of("ZeroDivisionError")
    assert (group["status"], group["ignoreCount"]) == ("unresolved", None)
    assert [t.kind for t in shop.heard] == ["new", "unignored"]


async def test_ignore_until_a_date_and_forever(shop: Shop) -> None:
    await shop.fail("/pay")
    fp = (await shop.group_of("ZeroDivisionError"))["fingerprint"]
    until = datetime.fromtimestamp(time.time() + 3600, UTC).isoformat()
    r = await shop.act(fp, "ignore", {"until": until})
    assert r.status_code == 200
    group = await shop.group_of("ZeroDivisionError")
    assert group["status"] == "ignored"
    assert datetime.fromisoformat(group["ignoreUntil"]) == datetime.fromisoformat(until)
    r = await shop.act(fp, "ignore")
    assert (r.json()["status"], r.json()["ignoreUntil"], r.json()["ignoreCount"]) == (
        "ignored",
        None,
        None,
    )
    await shop.fail("/pay", 3)
    assert (await shop.group_of("ZeroDivisionError"))["status"] == "ignored"


@pytest.mark.parametrize(
    ("action", "body", "field"),
    [
        ("ignore", {"count": 0}, "count"),
        ("ignore", {"count": "ten"}, "count"),
        ("ignore", {"count": True}, "count"),
        ("ignore", {"until": "2020-01-01T00:00:00Z"}, "until"),
        ("ignore", {"until": "tomorrow"}, "until"),
        ("ignore", {"until": "2030-01-01T00:00:00"}, "until"),
        ("ignore", {"forever": True}, "forever"),
        ("resolve", {"count": 3}, "count"),
        ("ignore", [1, 2], "body"),
    ],
)
async def test_a_bad_change_names_its_field_and_changes_nothing(
    shop: Shop, action: str, body: Any, field: str
) -> None:
    await shop.fail("/pay")
    fp = (await shop.group_of("ZeroDivisionError"))["fingerprint"]
    r = await shop.act(fp, action, body)
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == field
    (state,) = await shop.monitor.storage.error_groups("default")
    assert (state.status, state.version) == ("unresolved", 1)


async def test_unknown_groups_and_bodies_that_are_not_json_are_refused(shop: Shop) -> None:
    await shop.fail("/pay")
    assert (await shop.act("no-such-group", "resolve")).status_code == 404
    fp = (await shop.group_of("ZeroDivisionError"))["fingerprint"]
    r = await shop.client.post(
        f"{API}/errors/default/groups/{fp}/ignore",
        content=b"count=3",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert (r.status_code, r.json()["error"]["details"][0]["field"]) == (422, "Content-Type")
    r = await shop.client.post(
        f"{API}/errors/default/groups/{fp}/ignore",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert (r.status_code, r.json()["error"]["details"][0]["field"]) == (422, "body")
    r = await shop.client.get(f"{API}/errors/default/groups/no-such-group")
    assert r.status_code == 404


async def test_filters_by_type_severity_and_endpoint(shop: Shop) -> None:
    await shop.fail("/cart/1", 3)
    await shop.fail("/pay")
    await shop.fail("/handled", 2)
    everything = await shop.errors()
    assert everything["totalErrors"] == 6
    by_type = await shop.errors(type="ZeroDivisionError")
    assert (by_type["totalErrors"], [g["type"] for g in by_type["groups"]]) == (
        1,
        ["ZeroDivisionError"],
    )
    low = await shop.errors(severity="low")
    assert [(g["type"], g["count"]) for g in low["groups"]] == [("KeyError", 2)]
    assert sum(p["count"] for p in low["errorTrend"]) == 2
    at_cart = await shop.errors(endpoint="/cart/{item}")
    assert (at_cart["totalErrors"], at_cart["exact"]) == (3, True)
    assert {e["endpoint"] for e in at_cart["recentErrors"]} == {"/cart/{item}"}
    assert sum(p["count"] for p in at_cart["errorTrend"]) == 3
    bad = await shop.client.get(f"{API}/errors/default", params={"status": "open"})
    assert (bad.status_code, bad.json()["error"]["details"][0]["field"]) == (422, "status")


async def test_a_groups_detail_shows_its_stack_occurrences_and_reach(shop: Shop) -> None:
    for user in ("ann", "bo"):
        r = await shop.client.get("/cart/7", headers={"x-request-id": f"req-{user}"})
        assert r.status_code == 500
    await shop.settle()
    fp = (await shop.group_of("CartError"))["fingerprint"]
    r = await shop.client.get(f"{API}/errors/default/groups/{fp}", params={"range": "24h"})
    assert r.status_code == 200
    d = r.json()
    assert (d["count"], d["totalCount"], d["status"], d["severity"]) == (2, 2, "unresolved", "high")
    assert d["endpoints"] == [{"method": "GET", "endpoint": "/cart/{item}", "count": 2}]
    assert {o["requestId"] for o in d["occurrences"]} == {"req-ann", "req-bo"}
    frames = d["exception"][0]["frames"]
    assert frames[-1]["function"] == "add_to_cart"
    assert frames[-1]["inApp"] is True
    assert any(not f["inApp"] for f in frames)
    assert d["latest"]["kind"] == "error"
    assert sum(p["count"] for p in d["trend"]) == 2
    csv = await shop.client.get(
        f"{API}/errors/default/groups/{fp}", params={"format": "csv", "table": "occurrences"}
    )
    assert csv.status_code == 200
    assert csv.text.count("req-") == 2


async def settle_monitor(monitor: Monitor) -> None:
    """Until every stored error reached the lifecycle."""
    await monitor.recorder.flush()
    sub = monitor.recorder.sinks._subs["error-groups"]
    for _ in range(200):
        if not sub._batches and not sub._delivering:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the lifecycle did not catch up")


async def test_errors_belong_to_the_deployment_live_when_they_happened(storage: Storage) -> None:
    now = time.time()
    monitor = Monitor(storage=storage, flush_interval=0.01, api_rate_limit=None)
    transport = httpx.ASGITransport(app=monitor.wrap(Starlette()))

    def old_bug() -> None:
        raise RuntimeError("old bug")

    def new_bug() -> None:
        raise RuntimeError("new bug 1")

    async with monitor, httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        for dep, at in (("d1", now - 7200), ("d2", now - 3600)):
            await monitor.record_deployment_event(
                dep, "completed", status="success", duration_ms=1000.0, timestamp=at
            )
        # One bug from before d2 that goes on after it, one that d2 brought.
        for fail, at in ((old_bug, now - 5000), (new_bug, now - 1800)):
            try:
                fail()
            except RuntimeError as exc:
                at_then = Where(project_id="default", timestamp=at)
                monitor.record(exception_event(exc, at_then, monitor.errors.rules))
        try:
            old_bug()
        except RuntimeError as exc:
            monitor.capture_exception(exc)
        await settle_monitor(monitor)

        async def types(**params: str) -> list[str]:
            r = await c.get(f"{API}/errors/default", params={"range": "24h", **params})
            assert r.status_code == 200, r.text
            return sorted(g["message"] for g in r.json()["groups"])

        assert await types() == ["new bug 1", "old bug"]
        assert await types(deployment="d1") == ["old bug"]
        assert await types(deployment="d2") == ["new bug 1", "old bug"]
        assert await types(firstSeenIn="d2") == ["new bug 1"]
        assert await types(firstSeenIn="d1") == ["old bug"]
        assert await types(newSince="d2") == ["new bug 1"]
        assert await types(newSince="d1") == ["new bug 1", "old bug"]
        assert await types(deployment="d9") == []
        r = await c.get(f"{API}/deployments/default", params={"range": "24h"})
        new_groups = {d["deploymentId"]: d["newErrorGroups"] for d in r.json()["deployments"]}
        assert new_groups == {"d1": 1, "d2": 1}
        fp = (await c.get(f"{API}/errors/default", params={"range": "24h"})).json()["groups"]
        old = next(g for g in fp if g["message"] == "old bug")
        detail = (await c.get(f"{API}/errors/default/groups/{old['fingerprint']}")).json()
        assert {d["deploymentId"]: d["count"] for d in detail["deployments"]} == {"d1": 1, "d2": 1}


async def test_the_process_release_is_every_errors_deployment(storage: Storage) -> None:
    monitor = Monitor(
        storage=storage, flush_interval=0.01, api_rate_limit=None, deployment_id="rel-2026.12"
    )
    async with monitor:
        try:
            raise OSError("disk full")
        except OSError as exc:
            ev = monitor.capture_exception(exc)
        await settle_monitor(monitor)
    assert ev is not None
    assert ev.deployment_id == "rel-2026.12"
    (state,) = await storage.error_groups("default")
    assert (state.first_release, state.last_release) == ("rel-2026.12", "rel-2026.12")


async def test_a_group_recorded_before_its_lifecycle_keeps_its_history(storage: Storage) -> None:
    from asgimon import ErrorEvent

    now = time.time()
    old = [
        ErrorEvent(
            project_id="default", timestamp=now - h * 3600, fingerprint="legacy", message="m"
        )
        for h in (30, 20, 1)
    ]
    await storage.write(old)  # straight to the store: no lifecycle was kept for them
    monitor = Monitor(storage=storage, api_rate_limit=None)
    transport = httpx.ASGITransport(app=monitor.wrap(Starlette()))
    async with monitor, httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        r = await c.post(f"{API}/errors/default/groups/legacy/resolve")
    assert r.status_code == 200
    state = r.json()
    assert state["count"] == 3
    first = datetime.fromisoformat(state["firstSeen"]).timestamp()
    assert first <= now - 30 * 3600
