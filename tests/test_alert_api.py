"""The alert API: a rule's validation, who may manage which rules, history, silences,
preview and test sends, through a real app."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest

from asgimon import MemoryStorage
from asgimon.alerts.records import RULE
from asgimon.errors import StorageUnavailable
from asgimon.events import ErrorEvent

from .alerting import API, Shop, open_shop
from .tokens import JWT_SETTINGS, bearer, mint


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    async for s in open_shop():
        yield s


def iso_seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def fields_of(answer: Any) -> list[str]:
    return [d["field"] for d in answer.json()["error"]["details"]]


async def test_a_rule_is_created_with_its_type_defaults_and_listed_with_its_state(
    shop: Shop,
) -> None:
    r = await shop.client.post(
        f"{API}/alerts",
        json={"projectId": "default", "name": "Deploys failing", "type": "deployment_failure_rate"},
    )
    assert r.status_code == 201
    made = r.json()
    assert made["threshold"] == 10  # the type's default: 10 % in an hour
    assert made["window"] == 3600
    assert made["unit"] == "%"
    assert made["repeatInterval"] == 3600
    assert made["enabled"] is True
    assert made["createdBy"] == "local"

    listed = (await shop.client.get(f"{API}/alerts/default")).json()
    assert [a["id"] for a in listed] == [made["id"]]
    assert listed[0]["state"]["status"] == "ok"
    assert (await shop.client.get(f"{API}/alerts/other")).json() == []


async def test_a_bad_rule_is_refused_naming_every_bad_field_and_nothing_is_stored(
    shop: Shop,
) -> None:
    bad = {
        "projectId": "default",
        "name": "",
        "type": "api_latency",
        "threshold": -1,
        "window": 90,
        "pendingFor": "5m",
        "statistic": "p50",
        "filters": {"function": "resize", "method": "FETCH"},
        "channels": [{"type": "pager"}, {"type": "webhook", "url": "ftp://x"}],
        "colour": "red",
    }
    r = await shop.client.post(f"{API}/alerts", json=bad)
    assert r.status_code == 422
    assert sorted(fields_of(r)) == sorted(
        [
            "colour",
            "name",
            "threshold",
            "window",
            "pendingFor",
            "statistic",
            "filters.function",
            "filters.method",
            "channels[0].type",
            "channels[1].url",
        ]
    )
    assert await shop.monitor.storage.alert_records(RULE) == []

    for body, field in (
        ({"projectId": "default", "name": "x", "type": "nope"}, "type"),
        ({"name": "x", "type": "error_count"}, "projectId"),
        ({"projectId": "p" * 200, "name": "x", "type": "error_count"}, "projectId"),
        (
            {"projectId": "default", "name": "x", "type": "error_count", "threshold": "NaN"},
            "threshold",
        ),
    ):
        r = await shop.client.post(f"{API}/alerts", json=body)
        assert r.status_code == 422, body
        assert field in fields_of(r)
    r = await shop.client.post(
        f"{API}/alerts", content=b"{", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert await shop.monitor.storage.alert_records(RULE) == []


async def test_a_change_applies_only_what_it_names_and_a_bad_one_changes_nothing(
    shop: Shop,
) -> None:
    rule = await shop.rule(type="error_count", threshold=5, name="errors")
    r = await shop.client.patch(f"{API}/alerts/{rule}", json={"threshold": 9, "enabled": False})
    assert r.status_code == 200
    changed = r.json()
    assert (changed["threshold"], changed["enabled"], changed["name"]) == (9, False, "errors")
    assert changed["version"] == 2

    r = await shop.client.patch(
        f"{API}/alerts/{rule}", json={"threshold": "high", "projectId": "x"}
    )
    assert r.status_code == 422
    assert sorted(fields_of(r)) == ["projectId", "threshold"]
    (held,) = await shop.engine.rules("default")
    assert held.threshold == 9

    assert (await shop.client.patch(f"{API}/alerts/nope", json={"threshold": 1})).status_code == 404
    assert (await shop.client.delete(f"{API}/alerts/{rule}")).status_code == 204
    assert (await shop.client.delete(f"{API}/alerts/{rule}")).status_code == 404
    assert await shop.engine.rules("default") == []


async def test_a_webhook_secret_is_shown_once_then_masked_and_kept_across_changes(
    shop: Shop,
) -> None:
    r = await shop.client.post(
        f"{API}/alerts",
        json={
            "projectId": "default",
            "name": "hook",
            "type": "critical_error",
            "channels": [{"type": "webhook", "url": "https://hooks.example/a"}],
        },
    )
    assert r.status_code == 201
    secret = r.json()["channels"][0]["secret"]
    assert secret.startswith("whsec_")
    listed = (await shop.client.get(f"{API}/alerts/default")).json()[0]
    shown = listed["channels"][0]["secret"]
    assert secret not in str(listed)
    assert shown == "whsec_…" + secret[-4:]
    r = await shop.client.patch(
        f"{API}/alerts/{listed['id']}", json={"channels": listed["channels"], "threshold": 1}
    )
    assert r.status_code == 200
    (held,) = await shop.engine.rules("default")
    assert held.channels[0]["secret"] == secret


async def test_a_principal_manages_only_its_own_projects_alerts() -> None:
    async for shop in open_shop(**JWT_SETTINGS):
        alice = bearer(mint({"sub": "alice", "projects": ["shop"]}))
        bob = bearer(mint({"sub": "bob", "projects": ["blog"]}))
        body = {"projectId": "shop", "name": "errors", "type": "error_count"}
        r = await shop.client.post(f"{API}/alerts", json=body, headers=alice)
        assert r.status_code == 201
        rule = r.json()["id"]
        assert r.json()["createdBy"] == "alice"

        r = await shop.client.post(f"{API}/alerts", json=body, headers=bob)
        assert r.status_code == 403
        assert fields_of(r) == ["projectId"]
        assert (await shop.client.get(f"{API}/alerts/shop", headers=bob)).status_code == 403
        for call in (
            shop.client.patch(f"{API}/alerts/{rule}", json={"threshold": 1}, headers=bob),
            shop.client.delete(f"{API}/alerts/{rule}", headers=bob),
            shop.client.post(f"{API}/alerts/{rule}/test", headers=bob),
        ):
            assert (await call).status_code == 404  # as if there were no such rule
        assert (await shop.client.get(f"{API}/alerts/shop/history", headers=bob)).status_code == 403
        assert len(await shop.engine.rules("shop")) == 1
        assert (await shop.client.get(f"{API}/alerts/shop", headers=alice)).status_code == 200
        assert (await shop.client.get(f"{API}/alerts/shop")).status_code == 401


async def test_the_history_lists_transitions_and_deliveries_newest_first(shop: Shop) -> None:
    rule = await shop.rule(type="error_count", threshold=0, window=300)
    await shop.client.get("/boom")
    now = time.time()
    await shop.evaluate(now)
    await shop.evaluate(now + 360)
    entries = (await shop.client.get(f"{API}/alerts/default/history")).json()["history"]
    kinds = [(e["kind"], e.get("to") or e.get("status")) for e in entries]
    # Deliveries are stamped when they happened, the transitions at the judged moments.
    assert sorted(kinds) == [
        ("delivery", "firing"),
        ("delivery", "resolved"),
        ("inapp", "firing"),
        ("inapp", "resolved"),
        ("transition", "firing"),
        ("transition", "resolved"),
    ]
    transitions = [e["to"] for e in entries if e["kind"] == "transition"]
    assert transitions == ["resolved", "firing"]
    deliveries = [e for e in entries if e["kind"] == "delivery"]
    assert all(d["ok"] and d["channel"] == "inapp" and d["ruleId"] == rule for d in deliveries)
    only = await shop.client.get(
        f"{API}/alerts/default/history", params={"kind": "transition", "limit": "1"}
    )
    assert [e["to"] for e in only.json()["history"]] == ["resolved"]
    for params, field in (
        ({"kind": "gossip"}, "kind"),
        ({"limit": "0"}, "limit"),
        ({"before": "yesterday"}, "before"),
        ({"colour": "red"}, "colour"),
    ):
        r = await shop.client.get(f"{API}/alerts/default/history", params=params)
        assert r.status_code == 422
        assert fields_of(r) == [field]


async def test_a_silence_holds_notifications_back_until_it_ends(shop: Shop) -> None:
    rule = await shop.rule(type="error_count", threshold=0, window=3600)
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 600))
    r = await shop.client.post(
        f"{API}/alerts/default/silences", json={"until": until, "reason": "maintenance"}
    )
    assert r.status_code == 201
    silence = r.json()
    assert silence["active"] is True
    await shop.client.get("/boom")
    now = time.time()
    await shop.evaluate(now)
    assert (await shop.state(rule)).status == "firing"
    assert await shop.inbox(rule) == []  # silenced: recorded, not told
    entries = (await shop.client.get(f"{API}/alerts/default/history")).json()["history"]
    assert [e["silenced"] for e in entries if e["kind"] == "transition"] == [True]

    listed = (await shop.client.get(f"{API}/alerts/default/silences")).json()["silences"]
    assert [s["reason"] for s in listed] == ["maintenance"]
    r = await shop.client.delete(f"{API}/alerts/default/silences/{silence['id']}")
    assert r.status_code == 204
    await shop.evaluate(now + 60)  # still firing, and now told, with what was held back
    (note,) = await shop.inbox(rule)
    assert note.body["status"] == "firing"
    assert note.body["suppressed"] == 1


async def test_a_silence_for_one_rule_leaves_the_others_alone(shop: Shop) -> None:
    quiet = await shop.rule(type="error_count", threshold=0)
    loud = await shop.rule(type="error_count", threshold=0)
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 600))
    r = await shop.client.post(
        f"{API}/alerts/default/silences", json={"until": until, "ruleId": quiet}
    )
    assert r.status_code == 201
    await shop.client.get("/boom")
    await shop.evaluate()
    assert await shop.inbox(quiet) == []
    assert len(await shop.inbox(loud)) == 1


async def test_a_bad_silence_is_refused_naming_the_field(shop: Shop) -> None:
    past = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    for body, field in (
        ({}, "until"),
        ({"until": "soon"}, "until"),
        ({"until": past}, "until"),
        ({"until": "2031-01-01T00:00:00Z", "ruleId": "nope"}, "ruleId"),
        ({"until": "2026-12-31T00:00:00Z", "reason": 5}, "reason"),
    ):
        r = await shop.client.post(f"{API}/alerts/default/silences", json=body)
        assert r.status_code == 422, body
        assert field in fields_of(r)
    assert (await shop.client.get(f"{API}/alerts/default/silences")).json() == {"silences": []}
    gone = await shop.client.delete(f"{API}/alerts/default/silences/nope")
    assert gone.status_code == 404


async def test_a_preview_replays_stored_history_before_the_rule_is_saved() -> None:
    storage = MemoryStorage()
    # Judged once a minute, as by default: the replay steps through the week as often.
    async for shop in open_shop(storage, alerts_interval=60):
        now = time.time()
        # Three bursts of errors over the past days, and one now.
        for _ in range(4):
            shop.monitor.capture_exception(ValueError("now"), severity="high")
        for day in (1, 3, 5):
            for i in range(4):
                ev = ErrorEvent(timestamp=now - day * 86_400 + i, fingerprint=f"f{day}")
                shop.monitor.recorder.put(ev)
        await shop.settle()
        body = {"projectId": "default", "type": "error_count", "threshold": 3, "window": 600}
        r = await shop.client.post(f"{API}/alerts/preview", json=body)
        assert r.status_code == 200
        replay = r.json()
        assert replay["fired"] == 4
        assert replay["summary"] == "would have fired 4 times in the last 7 days"
        days_ago = sorted(round((now - iso_seconds(t)) / 86_400) for t in replay["firedAt"])
        assert days_ago == [0, 1, 3, 5]
        assert await shop.monitor.storage.alert_records(RULE) == []  # nothing saved

        two = await shop.client.post(f"{API}/alerts/preview", json={**body, "days": 2})
        assert two.json()["fired"] == 2
        bad = await shop.client.post(f"{API}/alerts/preview", json={**body, "days": 99})
        assert bad.status_code == 422
        assert fields_of(bad) == ["days"]


async def test_a_preview_of_an_event_rule_replays_the_stored_events(shop: Shop) -> None:
    m = shop.monitor
    now = time.time()
    for hours in (50, 49.9, 20):  # two failures close together, one a day later
        await m.record_deployment_event(
            f"d{hours}", "completed", status="failure", timestamp=now - hours * 3600
        )
    await shop.settle()
    r = await shop.client.post(
        f"{API}/alerts/preview",
        json={"projectId": "default", "type": "deployment_failure", "window": 3600},
    )
    assert r.json()["fired"] == 2
    assert len(r.json()["resolvedAt"]) == 2


async def test_a_test_send_reports_each_channels_outcome(shop: Shop) -> None:
    rule = await shop.rule(
        type="critical_error",
        channels=[{"type": "inapp"}, {"type": "webhook", "url": "http://127.0.0.1:9/hook"}],
    )
    r = await shop.client.post(f"{API}/alerts/{rule}/test")
    assert r.status_code == 200
    inapp, webhook = r.json()["deliveries"]
    assert (inapp["channel"], inapp["ok"]) == ("inapp", True)
    assert (webhook["channel"], webhook["ok"]) == ("webhook", False)
    assert "127.0.0.1" in webhook["reason"]  # refused: loopback is not allowlisted
    (note,) = await shop.inbox(rule)
    assert note.body["status"] == "test"


async def test_with_alerts_off_the_api_says_so() -> None:
    async for off in open_shop(alerts_enabled=False):
        r = await off.client.get(f"{API}/alerts/default")
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "alerts_disabled"


async def test_a_firing_rule_whose_type_changes_starts_again_from_ok(shop: Shop) -> None:
    rule = await shop.rule(type="error_count", threshold=0)
    await shop.client.get("/boom")
    await shop.evaluate()
    assert (await shop.state(rule)).status == "firing"
    r = await shop.client.patch(f"{API}/alerts/{rule}", json={"type": "critical_error"})
    assert r.status_code == 200
    assert r.json()["state"]["status"] == "ok"
    assert await shop.transitions(rule) == ["firing", "ok"]
    entries = (await shop.client.get(f"{API}/alerts/default/history")).json()["history"]
    assert entries[0]["reason"] == "its type changed from error_count"


async def test_a_silenced_event_rule_is_told_once_the_silence_ends(shop: Shop) -> None:
    rule = await shop.rule(type="critical_error", window=3600)
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 600))
    r = await shop.client.post(f"{API}/alerts/default/silences", json={"until": until})
    assert r.status_code == 201
    for _ in range(3):
        shop.monitor.capture_exception(RuntimeError("ledger"), severity="critical")
    await shop.settle()
    await shop.evaluate(time.time() + 60)
    assert await shop.inbox(rule) == []  # still silenced
    await shop.evaluate(time.time() + 660)  # the silence is over, the alert still firing
    (note,) = await shop.inbox(rule)
    assert note.body["status"] == "firing"
    assert note.body["suppressed"] >= 2  # the three matches, told at last


async def test_a_rule_silenced_until_it_resolved_tells_no_one_of_either(shop: Shop) -> None:
    rule = await shop.rule(type="critical_error", window=600)
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3000))
    await shop.client.post(f"{API}/alerts/default/silences", json={"until": until})
    shop.monitor.capture_exception(RuntimeError("ledger"), severity="critical")
    await shop.settle()
    await shop.evaluate(time.time() + 700)
    assert (await shop.state(rule)).status == "resolved"
    assert await shop.inbox(rule) == []


async def test_an_unrecorded_transition_is_still_told(shop: Shop) -> None:
    rule = await shop.rule(type="critical_error")
    storage = shop.monitor.storage
    real = storage.add_alert_history
    failing = {"left": 2}

    async def flaky(entries: Any) -> None:
        if failing["left"] and any(e.kind == "transition" for e in entries):
            failing["left"] -= 1
            raise StorageUnavailable("history is down")
        await real(entries)

    storage.add_alert_history = flaky  # type: ignore[method-assign]
    shop.monitor.capture_exception(RuntimeError("ledger"), severity="critical")
    await shop.settle()
    assert (await shop.state(rule)).status == "firing"
    (note,) = await shop.inbox(rule)  # the transition's entry lost, its notification not
    assert note.body["status"] == "firing"
    assert shop.engine.counts["failures"] == 1


async def test_odd_inputs_are_refused_naming_the_field(shop: Shop) -> None:
    r = await shop.client.get(f"{API}/alerts/default/history", params={"limit": "²"})
    assert r.status_code == 422
    assert fields_of(r) == ["limit"]
    r = await shop.client.post(
        f"{API}/alerts",
        json={"projectId": "default", "name": "x", "type": "critical_error", "pendingFor": 60},
    )
    assert r.status_code == 422
    assert fields_of(r) == ["pendingFor"]


async def test_masked_secrets_follow_their_webhook_when_the_channels_change(shop: Shop) -> None:
    hooks = [{"type": "webhook", "url": f"https://hooks.example/{n}"} for n in ("a", "b")]
    r = await shop.client.post(
        f"{API}/alerts",
        json={"projectId": "default", "name": "x", "type": "critical_error", "channels": hooks},
    )
    secrets = [c["secret"] for c in r.json()["channels"]]
    listed = (await shop.client.get(f"{API}/alerts/default")).json()[0]
    # The first webhook removed, the second sent back as read: it keeps its own secret.
    r = await shop.client.patch(
        f"{API}/alerts/{listed['id']}", json={"channels": listed["channels"][1:]}
    )
    assert r.status_code == 200
    (held,) = await shop.engine.rules("default")
    assert [c["secret"] for c in held.channels] == [secrets[1]]
