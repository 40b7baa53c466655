"""The alerts page and the header's notifications over HTTP: what a person sees and what
each form does (or, refused, does not do)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from html import unescape
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from asgimon import ErrorEvent, MemoryStorage, Monitor
from asgimon.alerts.channels import Notification, Status
from asgimon.alerts.engine import AlertEngine
from asgimon.alerts.preview import replay
from asgimon.alerts.records import INAPP, HistoryEntry
from asgimon.alerts.rules import AlertRule, parse_rule

from .tokens import JWT_SETTINGS, bearer, claims, mint

ORIGIN = {"origin": "http://localhost"}
PAGE = "/analytics/alerts"


@asynccontextmanager
async def browsing(
    monitor: Monitor, headers: dict[str, str] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(monitor.wrap(Starlette()), client=("127.0.0.1", 1))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://localhost", headers=headers
    ) as c:
        yield c


def engine_of(monitor: Monitor) -> AlertEngine:
    assert monitor.alerts is not None
    return monitor.alerts


async def make_rule(monitor: Monitor, project: str, name: str, **fields: Any) -> AlertRule:
    engine = engine_of(monitor)
    data = {"name": name, "type": "error_count", "channels": [{"type": "inapp"}], **fields}
    rule, errors = parse_rule(data, engine.channels, project_id=project)
    assert rule is not None, errors
    saved = await engine.save(rule)
    assert saved is not None
    return saved


async def notify(
    monitor: Monitor, rule: AlertRule, summary: str, status: Status = "firing"
) -> None:
    """An in-app notification, as the in-app channel stores one."""
    now = time.time()
    note = Notification(
        id=f"n-{rule.id}-{now}",
        project_id=rule.project_id,
        rule_id=rule.id,
        rule_name=rule.name,
        rule_type=rule.type,
        status=status,
        summary=summary,
        at=now,
    )
    entry = HistoryEntry(f"{note.id}:inapp", rule.project_id, rule.id, now, INAPP, note.to_json())
    await monitor.storage.add_alert_history([entry])


async def token_of(c: httpx.AsyncClient, project: str = "shop") -> str:
    page = await c.get(PAGE, params={"project": project})
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


async def send(
    c: httpx.AsyncClient, data: dict[str, str], project: str = "shop", *, token: str | None = ""
) -> httpx.Response:
    """Post one of the page's forms as the browser would (``token=None``: without one)."""
    if token == "":
        token = await token_of(c, project)
    body = {**data, **({"csrf_token": token} if token is not None else {})}
    return await c.post(PAGE, params={"project": project}, data=body, headers=ORIGIN)


async def followed(c: httpx.AsyncClient, answer: httpx.Response) -> str:
    """The page a form's 303 leads to, as text."""
    assert answer.status_code == 303, answer.text[:2000]
    page = await c.get(answer.headers["location"])
    assert page.status_code == 200
    return unescape(page.text)


def told(html: str) -> str:
    """The message a form's redirect shows, as its text."""
    found = re.search(r'<div class="flash[^"]*" role="status">(.*?)</div>', html, re.S)
    assert found is not None, "no message on the page"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group(1))).strip()


def listed(html: str) -> list[str]:
    """The names in the rules table, in order."""
    table = re.search(r'<table class="rules">(.*?)</table>', html, re.S)
    return re.findall(r"<td><strong>(.*?)</strong>", table.group(1)) if table else []


def field_error(html: str, key: str) -> str:
    """The problem shown beside one field of a form."""
    found = re.search(rf'<p class="field-error" id="e-{key}">(.*?)</p>', html)
    assert found is not None, f"no problem shown beside {key}"
    return unescape(found.group(1))


def header_notes(html: str) -> list[str]:
    """The rule names the header's notifications list."""
    found = re.search(r"<ol class=\"notes\" data-inbox-list>(.*?)</ol>", html, re.S)
    assert found is not None, "no notifications in the header"
    names = re.findall(r'<span class="note-rule">(.*?) <span class="sub">', found.group(1))
    return [unescape(n) for n in names]


# -- the page -------------------------------------------------------------------------------


async def test_the_page_lists_the_projects_rules_and_only_those() -> None:
    monitor = Monitor(project_id="shop", storage=MemoryStorage())
    await make_rule(monitor, "shop", "Checkout errors", threshold=3, window=600)
    await make_rule(monitor, "shop", "Slow API", type="api_latency", statistic="p95")
    await make_rule(monitor, "billing", "Invoices failing")
    async with browsing(monitor) as c:
        page = await c.get(PAGE, params={"project": "shop"})
    html = unescape(page.text)
    assert page.status_code == 200
    assert listed(html) == ["Checkout errors", "Slow API"]
    assert "Invoices failing" not in html
    assert "> 3 errors" in html  # threshold with its unit
    assert "p95 > 500 ms" in html
    assert "10 min" in html  # the window, in minutes
    assert 'aria-current="page">Alerts</a>' in html  # in the navigation


async def test_an_empty_project_says_what_to_do_next() -> None:
    async with browsing(Monitor(project_id="shop", storage=MemoryStorage())) as c:
        html = unescape((await c.get(PAGE, params={"project": "shop"})).text)
    assert "No alert rule for shop yet." in html
    assert 'href="#new-rule">Make the first one below</a>' in html
    assert "Nothing yet." in html  # the history's own empty state


async def test_another_projects_rules_are_never_shown_to_who_may_not_see_it() -> None:
    monitor = Monitor(project_id="shop", storage=MemoryStorage(), **JWT_SETTINGS)
    mine = await make_rule(monitor, "shop", "Checkout errors")
    theirs = await make_rule(monitor, "secret", "Secret payroll")
    await notify(monitor, mine, "Errors in a window is 4 errors")
    await notify(monitor, theirs, "Payroll is failing")
    alice = bearer(mint(claims(sub="alice", projects=["shop"])))
    async with browsing(monitor, alice) as c:
        own = unescape((await c.get(PAGE, params={"project": "shop"})).text)
        other = await c.get(PAGE, params={"project": "secret"})
        deleted = await send(c, {"action": "delete", "rule": theirs.id})
        elsewhere = await c.post(
            PAGE, params={"project": "secret"}, data={"action": "delete", "rule": theirs.id}
        )
    assert listed(own) == ["Checkout errors"]
    assert "Secret payroll" not in own
    assert header_notes(own) == ["Checkout errors"]  # not the other project's
    assert other.status_code == 404
    assert "Secret payroll" not in other.text
    assert deleted.status_code == 404
    assert "no alert rule with this id in this project" in deleted.text
    assert elsewhere.status_code == 403  # no CSRF token of this browser: refused first
    assert await engine_of(monitor).rule(theirs.id) is not None


async def test_a_form_without_this_browsers_token_is_refused_and_changes_nothing() -> None:
    monitor = Monitor(project_id="shop", storage=MemoryStorage())
    rule = await make_rule(monitor, "shop", "Checkout errors")
    create = {"action": "create", "name": "Forged", "type": "error_rate", "inapp": "on"}
    async with browsing(monitor) as c:
        without = await send(c, create, token=None)
        guessed = await send(c, {"action": "delete", "rule": rule.id}, token="guess")
        token = await token_of(c)
        elsewhere = await c.post(
            PAGE,
            params={"project": "shop"},
            data={"action": "delete", "rule": rule.id, "csrf_token": token},
            headers={"origin": "http://evil.example"},
        )
    assert without.status_code == 403
    assert "the form has expired; reload the page and send it again" in without.text
    assert guessed.status_code == 403
    assert elsewhere.status_code == 404  # from another site the guard answers as to a stranger
    assert [r.name for r in await engine_of(monitor).rules("shop")] == ["Checkout errors"]


async def test_a_bad_rule_form_names_each_field_keeps_what_was_typed_and_stores_nothing() -> None:
    monitor = Monitor(project_id="shop", storage=MemoryStorage())
    async with browsing(monitor) as c:
        answer = await send(
            c,
            {
                "action": "create",
                "type": "error_rate",
                "threshold": "lots",
                "window": "0",
                "f_function": "resize",
                "webhook": "ftp://hooks.example.com",
                "inapp": "on",
            },
        )
    html = unescape(answer.text)
    assert answer.status_code == 422
    assert "The rule was not saved." in html
    assert field_error(html, "name").startswith("is required")
    assert field_error(html, "threshold") == "must be a number from 0 to 1,000,000,000,000"
    assert field_error(html, "window") == "must be a whole number of minutes from 1 to 43,200"
    assert "takes no function filter" in field_error(html, "f_function")
    assert "http" in field_error(html, "webhook")
    summary = re.findall(r'<li><a href="#f-([a-z_]+)">([^<]+)</a>', html)
    assert summary == [
        ("name", "Name"),
        ("threshold", "Threshold"),
        ("window", "Window"),
        ("f_function", "Function filter"),
        ("webhook", "Webhook URL"),
    ]
    assert 'value="lots"' in html  # what was typed is there to correct
    assert 'aria-describedby="h-threshold e-threshold" aria-invalid="true"' in html
    assert await engine_of(monitor).rules("shop") == []


async def test_create_disable_enable_and_delete_through_the_forms() -> None:
    monitor = Monitor(project_id="shop", storage=MemoryStorage())
    engine = engine_of(monitor)
    async with browsing(monitor) as c:
        created = await send(
            c,
            {
                "action": "create",
                "name": "Slow checkout",
                "type": "api_latency",
                "threshold": "800",
                "window": "10",
                "pending": "5",
                "repeat": "30",
                "statistic": "p95",
                "f_endpoint": "/checkout",
                "inapp": "on",
                "webhook": "https://hooks.example.com/asgimon",
            },
        )
        html = await followed(c, created)
        [rule] = await engine.rules("shop")
        assert created.headers["location"].endswith(f"#rule-{rule.id}")
        assert told(html).startswith("Created “Slow checkout”. Its webhook requests are signed")
        assert rule.channels[1]["secret"] in html  # shown this once
        assert listed(html) == ["Slow checkout"]
        assert (rule.threshold, rule.window, rule.pending_for, rule.repeat_interval) == (
            800,
            600,
            300,
            1800,
        )
        assert (rule.statistic, rule.filters) == ("p95", {"endpoint": "/checkout"})
        assert "p95 > 800 ms" in html
        assert "webhook https://hooks.example.com/asgimon" in html
        again = unescape((await c.get(PAGE, params={"project": "shop"})).text)
        assert rule.channels[1]["secret"] not in again  # once only
        assert 'class="flash' not in again

        html = await followed(c, await send(c, {"action": "disable", "rule": rule.id}))
        assert told(html).startswith("Disabled “Slow checkout”")
        assert (await engine.rules("shop"))[0].enabled is False
        assert '<td data-label="Enabled">no</td>' in html

        html = await followed(c, await send(c, {"action": "enable", "rule": rule.id}))
        assert told(html) == "Enabled “Slow checkout”."
        assert (await engine.rules("shop"))[0].enabled is True

        html = await followed(c, await send(c, {"action": "delete", "rule": rule.id}))
        assert told(html) == "Deleted “Slow checkout”."
        assert listed(html) == []
        assert await engine.rules("shop") == []


async def test_a_test_send_shows_each_channels_outcome_and_lands_in_the_header() -> None:
    monitor = Monitor(
        project_id="shop",
        storage=MemoryStorage(),
        alerts_max_attempts=1,
        webhook_allow=("127.0.0.1",),
    )
    rule = await make_rule(
        monitor,
        "shop",
        "Checkout errors",
        channels=[{"type": "inapp"}, {"type": "webhook", "url": "http://127.0.0.1:9/hook"}],
    )
    async with browsing(monitor) as c:
        html = await followed(c, await send(c, {"action": "test", "rule": rule.id}))
    message = told(html)
    assert message.startswith("Test notification for “Checkout errors”: 1 of 2 channels delivered.")
    assert "in-app: delivered" in message
    assert "webhook: failed (" in message
    assert header_notes(html) == ["Checkout errors"]
    history = re.search(r'<table class="history">(.*?)</table>', html, re.S)
    assert history is not None
    assert "test notification by webhook http://127.0.0.1:9/hook" in history.group(1)
    assert "failed after 1 attempt" in history.group(1)


async def test_silence_the_project_and_a_rule_then_end_a_silence() -> None:
    monitor = Monitor(project_id="shop", storage=MemoryStorage())
    engine = engine_of(monitor)
    rule = await make_rule(monitor, "shop", "Checkout errors")
    until = datetime.fromtimestamp(time.time() + 7200, UTC).strftime("%Y-%m-%dT%H:%M")
    async with browsing(monitor) as c:
        html = await followed(
            c, await send(c, {"action": "silence", "until": until, "reason": "db upgrade"})
        )
        assert told(html).startswith("Silenced every rule of this project until")
        html = await followed(
            c, await send(c, {"action": "silence", "rule": rule.id, "until": until})
        )
        assert told(html).startswith("Silenced “Checkout errors” until")
        silences = await engine.silences("shop")
        assert sorted(str(s.body["ruleId"]) for s in silences) == sorted(["None", rule.id])
        assert "the whole project" in html
        assert "db upgrade" in html

        bad = await send(c, {"action": "silence", "until": "tomorrow-ish"})
        assert bad.status_code == 422
        assert "must be a date and time" in field_error(unescape(bad.text), "until")
        past = await send(c, {"action": "silence", "until": "2001-01-01T00:00"})
        assert field_error(unescape(past.text), "until") == (
            "must be a time in the next 90 days (UTC)"
        )
        assert len(await engine.silences("shop")) == 2

        ended = await send(c, {"action": "unsilence", "silence": silences[0].id})
        html = await followed(c, ended)
        assert told(html) == "Ended the silence: its rules notify again."
        assert [s.id for s in await engine.silences("shop")] == [silences[1].id]


async def test_preview_shows_how_often_the_rule_would_have_fired_and_saves_nothing() -> None:
    storage = MemoryStorage()
    now = time.time()
    await storage.write(
        [
            ErrorEvent(project_id="shop", timestamp=now - hours * 3600, error_type="KeyError")
            for hours in (2, 2, 30, 30, 30, 80)
        ]
    )
    monitor = Monitor(project_id="shop", storage=storage)
    engine = engine_of(monitor)
    form = {"action": "preview", "type": "error_count", "threshold": "1", "window": "5"}
    async with browsing(monitor) as c:
        answer = await send(c, form)
    html = unescape(answer.text)
    rule, _ = parse_rule(
        {"name": "preview", "type": "error_count", "threshold": 1, "window": 300},
        engine.channels,
        project_id="shop",
    )
    assert rule is not None
    expected = await replay(rule, storage, now=now, days=7, period=60)
    assert len(expected.fired) == 2  # two minutes with more than one error
    assert answer.status_code == 200
    assert '<h3 id="preview-h">Would have fired 2 times in the last 7 days</h3>' in html
    times = re.findall(r"<li>(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC)</li>", html)
    assert len(times) == 2
    assert 'value="1"' in html  # the form comes back filled in, to create it as it is
    assert await engine.rules("shop") == []


async def test_with_alerting_off_the_page_says_so() -> None:
    monitor = Monitor(project_id="shop", storage=MemoryStorage(), alerts_enabled=False)
    async with browsing(monitor) as c:
        page = await c.get(PAGE, params={"project": "shop"})
        overview = await c.get("/analytics/", params={"project": "shop"})
        token = c.cookies.get("asgimon_csrf")
        assert token is not None
        posted = await send(c, {"action": "create", "name": "x"}, token=token)
    assert page.status_code == 200
    assert "Alerting is off" in page.text
    assert "ALERTS_ENABLED=true" in page.text
    assert "data-inbox" not in overview.text  # no notifications in the header
    assert posted.status_code == 404
    assert "alerting is off (ALERTS_ENABLED=false)" in posted.text


# -- the header's notifications ---------------------------------------------------------------


async def test_the_header_lists_an_alert_that_fired_on_every_page() -> None:
    storage = MemoryStorage()
    now = time.time()
    await storage.write(
        [
            ErrorEvent(project_id="shop", timestamp=now - 20, error_type="KeyError"),
            ErrorEvent(project_id="shop", timestamp=now - 10, error_type="ValueError"),
        ]
    )
    monitor = Monitor(project_id="shop", storage=storage)
    await make_rule(monitor, "shop", "Checkout errors", threshold=1, window=300)
    async with monitor:
        engine = engine_of(monitor)
        await engine.evaluate()
        assert await engine.outbox.settled()
        async with browsing(monitor) as c:
            overview = unescape((await c.get("/analytics/", params={"project": "shop"})).text)
            alerts = unescape((await c.get(PAGE, params={"project": "shop"})).text)
    assert header_notes(overview) == ["Checkout errors"]
    assert '<span class="badge" data-inbox-count>1 firing</span>' in overview
    assert "Errors in a window is 2 errors (threshold 1 errors)" in overview
    assert '<span class="state firing">firing</span>' in alerts
    assert "ok → firing" in alerts
    assert "firing notification by in-app" in alerts
    assert "delivered after 1 attempt" in alerts


async def test_the_header_reads_storage_once_a_second_whatever_the_number_of_pages() -> None:
    monitor = Monitor(project_id="shop", storage=MemoryStorage())
    await notify(monitor, await make_rule(monitor, "shop", "Checkout errors"), "firing now")
    inbox = monitor.dashboard.inbox
    assert inbox is not None
    async with browsing(monitor) as c:
        pages = await asyncio.gather(
            *(c.get("/analytics/errors", params={"project": "shop"}) for _ in range(20))
        )
    assert [header_notes(unescape(p.text)) for p in pages] == [["Checkout errors"]] * 20
    assert inbox.reads == 1  # one read of the project's history, shared by every page


async def test_the_stream_pushes_new_notifications_of_visible_projects_only() -> None:
    monitor = Monitor(project_id="shop", storage=MemoryStorage(), **JWT_SETTINGS)
    stream = monitor.dashboard.stream
    stream.lifetime_s = 2.6
    mine = await make_rule(monitor, "shop", "Checkout errors")
    theirs = await make_rule(monitor, "secret", "Secret payroll")
    await notify(monitor, mine, "first")
    await notify(monitor, theirs, "hidden")
    alice = bearer(mint(claims(sub="alice", projects=["shop"])))
    async with browsing(monitor, alice) as c:
        url = "/analytics/api/stream?project=shop&topics=notifications"
        reading = asyncio.ensure_future(c.get(url))
        await asyncio.sleep(0.3)
        await notify(monitor, mine, "second")
        answer = await reading
        stream.lifetime_s = 0.2
        bad = await c.get("/analytics/api/stream?project=shop&topics=weather")
        figures = await c.get("/analytics/api/stream?project=shop")
    assert answer.status_code == 200
    sent = [line[6:] for line in answer.text.splitlines() if line.startswith("data: ")]
    summaries = [[i["summary"] for i in json.loads(data)["items"]] for data in sent]
    assert summaries == [["first"], ["second", "first"]]  # the new one, within a second or so
    assert "event: figures" not in answer.text
    assert "Secret payroll" not in answer.text
    assert bad.status_code == 422
    assert bad.json()["error"]["details"][0]["field"] == "topics"
    assert "event: notifications" not in figures.text  # the figures' stream, as before


@pytest.mark.parametrize("topics", ["notifications", "figures,notifications"])
async def test_the_notifications_stream_is_refused_with_alerting_off(topics: str) -> None:
    async with browsing(
        Monitor(project_id="shop", storage=MemoryStorage(), alerts_enabled=False)
    ) as c:
        answer = await c.get("/analytics/api/stream", params={"project": "shop", "topics": topics})
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "alerts_disabled"
