"""The alerts page and the header's notifications in a real browser (Debian's Chromium):
a rule made, previewed and disabled through the form with JavaScript off, the form's
problems beside its fields, and an in-app notification that appears in the header of an
open page, without a reload, when an alert fires."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page

from asgimon import ErrorEvent

from .browser_server import Served, serve
from .test_pages_browser import AXE, SHOTS, boom, column, page_url, visit

pytest_plugins = ["tests.test_pages_browser"]  # its browser and playwright fixtures

RULE = {"name": "Checkout errors", "type": "error_count", "threshold": 0, "window": 300}


@pytest.fixture(scope="module")
def alerting() -> Iterator[Served]:
    now = time.time()
    errors = [
        ErrorEvent(project_id="shop", timestamp=now - hours * 3600, error_type="KeyError")
        for hours in (1, 5, 5, 26, 50, 100)
    ]
    with serve(errors, alerts_max_attempts=1) as s:
        yield s


def api(served: Served, method: str, path: str, body: Any = None) -> Any:
    answer = httpx.request(method, f"{served.mount}/api/{path}", json=body, timeout=10)
    assert answer.status_code < 300, answer.text
    return answer.json() if answer.content else None


def rules(served: Served) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = api(served, "GET", "alerts/shop")
    return found


def text(page: Page, selector: str) -> str:
    return " ".join(page.locator(selector).inner_text().split())


def whole_page(page: Page, path: str) -> None:
    """A screenshot of the whole page, every panel laid out (they are laid out near the
    viewport only: a faster first paint)."""
    width = page.viewport_size["width"] if page.viewport_size else 1440
    page.set_viewport_size({"width": width, "height": page.evaluate("document.body.scrollHeight")})
    page.wait_for_timeout(100)
    page.screenshot(path=str(SHOTS / path), full_page=True)
    page.set_viewport_size({"width": width, "height": 900})


def test_create_preview_and_disable_a_rule_without_javascript(
    browser: Browser, alerting: Served
) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    ctx = browser.new_context(java_script_enabled=False, viewport={"width": 1440, "height": 900})
    try:
        p = visit(ctx, page_url(alerting, "/alerts"))
        assert "No alert rule for shop yet." in text(p.page, "main")
        p.page.fill("#f-name", "Checkout errors")
        p.page.select_option("#f-type", label="Errors in a window (errors)")
        p.page.fill("#f-threshold", "0")
        p.page.fill("#f-window", "5")
        p.page.click('button:text-is("Preview")')
        p.page.wait_for_load_state()
        expected = api(alerting, "POST", "alerts/preview", {**RULE, "projectId": "shop"})
        assert expected["fired"] > 0
        assert text(p.page, "#preview-h") == "W" + expected["summary"][1:]
        assert p.page.locator(".preview .times li").count() == min(expected["fired"], 50)
        assert p.page.input_value("#f-name") == "Checkout errors"  # nothing lost, nothing saved
        assert rules(alerting) == []
        whole_page(p.page, "alerts-preview-1440.png")

        p.page.click('button:text-is("Create rule")')
        p.page.wait_for_load_state()
        [rule] = rules(alerting)
        assert p.page.url.endswith(f"#rule-{rule['id']}")
        assert text(p.page, ".flash") == "Created “Checkout errors”."
        assert [c.split("\n")[0] for c in column(p.page, "Rules", 1)] == ["Checkout errors"]
        assert column(p.page, "Rules", 2) == ["> 0 errors"]
        assert column(p.page, "Rules", 5) == ["in-app"]
        assert column(p.page, "Rules", 6) == ["yes"]

        p.page.click('button[aria-label="Disable Checkout errors"]')
        p.page.wait_for_load_state()
        assert text(p.page, ".flash").startswith("Disabled “Checkout errors”")
        assert column(p.page, "Rules", 6) == ["no"]
        assert [r["enabled"] for r in rules(alerting)] == [False]
        p.clean()
    finally:
        ctx.close()


def test_the_form_fits_the_type_and_names_its_problems(browser: Browser, alerting: Served) -> None:
    before = len(rules(alerting))
    ctx = browser.new_context(viewport={"width": 1440, "height": 900})
    try:
        p = visit(ctx, page_url(alerting, "/alerts"))
        p.page.select_option("#f-type", "memory")
        assert p.page.is_visible("#f-statistic")
        assert p.page.is_hidden("#f-f_endpoint")  # the memory rule takes no filter
        assert text(p.page, "[data-unit-label]") == "MB"
        p.page.select_option("#f-type", "critical_error")
        assert p.page.is_hidden("#f-threshold")  # it fires on the event itself
        p.page.select_option("#f-type", "api_latency")
        assert p.page.is_visible("#f-f_endpoint")
        p.page.fill("#f-name", "")
        p.page.fill("#f-threshold", "fast")
        p.page.fill("#f-repeat", "0")
        p.page.click('button:text-is("Create rule")')
        p.page.wait_for_load_state()
        assert text(p.page, ".form-problems").startswith("The rule was not saved.")
        assert text(p.page, "#e-name").startswith("is required")
        assert text(p.page, "#e-threshold") == "must be a number from 0 to 1,000,000,000,000"
        assert text(p.page, "#e-repeat") == "must be a whole number of minutes from 1 to 43,200"
        assert p.page.input_value("#f-threshold") == "fast"
        assert p.page.input_value("#f-type") == "api_latency"
        assert len(rules(alerting)) == before
        whole_page(p.page, "alerts-form-problems-1440.png")
    finally:
        ctx.close()


def stored_notification(served: Served, rule_name: str) -> float:
    """When the in-app notification of ``rule_name`` was stored (seconds, monotonic)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        history = api(served, "GET", "alerts/shop/history?kind=inapp")["history"]
        if any(h["ruleName"] == rule_name for h in history):
            return time.monotonic()
        time.sleep(0.05)
    raise AssertionError(f"no in-app notification of {rule_name}")


def test_an_alert_that_fires_appears_in_the_header_without_a_reload(
    browser: Browser, alerting: Served
) -> None:
    api(
        alerting,
        "POST",
        "alerts",
        {
            "projectId": "shop",
            "name": "New kind of error",
            "type": "new_error_group",
            "channels": [{"type": "inapp"}],
        },
    )
    for width in (1440, 375):
        ctx = browser.new_context(viewport={"width": width, "height": 900})
        try:
            p = visit(ctx, page_url(alerting, "/"))
            p.page.wait_for_selector("[data-live-state].on", timeout=5000)  # streaming
            p.page.evaluate("window.__loaded = 1")
            if width == 1440:
                assert p.page.is_hidden("[data-inbox-count]")
                boom(alerting, "checkout")
                stored = stored_notification(alerting, "New kind of error")
                p.page.wait_for_selector(
                    '.note-rule:has-text("New kind of error")', state="attached", timeout=5000
                )
                # Within about a second of being stored (storage read once a second).
                assert time.monotonic() - stored < 2.5
            badge = p.page.locator("[data-inbox-count]")
            badge.wait_for(state="visible", timeout=5000)
            assert badge.inner_text() == "1 firing"
            assert p.page.evaluate("window.__loaded") == 1  # the same page: no reload
            p.page.click(".inbox summary")
            assert p.page.is_visible('.note-rule:has-text("New kind of error")')
            assert "A new kind of error" in text(p.page, ".note-summary")
            p.page.screenshot(path=str(SHOTS / f"alerts-header-live-{width}.png"))
            p.page.keyboard.press("Escape")
            assert not p.page.locator(".inbox").evaluate("el => el.open")
            p.page.click(".inbox summary")
            p.page.click(".note a")
            p.page.wait_for_load_state()
            assert "/alerts?project=shop#rule-" in p.page.url
            p.clean()
        finally:
            ctx.close()


def streams_open(served: Served, want: int) -> int:
    """The streams the server holds open, once they are ``want`` (or 5 s have passed)."""
    stream = served.monitor.dashboard.stream
    deadline = time.monotonic() + 5
    while stream.open != want and time.monotonic() < deadline:
        time.sleep(0.05)
    return stream.open


def test_open_tabs_share_one_stream_and_each_hears_a_notification(
    browser: Browser, alerting: Served
) -> None:
    rule = api(
        alerting,
        "POST",
        "alerts",
        {**RULE, "name": "Tabs", "channels": [{"type": "inapp"}], "projectId": "shop"},
    )
    assert streams_open(alerting, 0) == 0
    ctx = browser.new_context(viewport={"width": 1024, "height": 700})
    try:
        # More tabs than the six connections a browser opens to one host.
        tabs = [visit(ctx, page_url(alerting, "/deployments")) for _ in range(8)]
        for t in tabs:
            t.page.wait_for_function("document.readyState === 'complete'")
        assert streams_open(alerting, 1) == 1
        for summary in ("first", "second"):
            api(alerting, "POST", f"alerts/{rule['id']}/test", {})
            for t in tabs:
                t.page.wait_for_function(
                    "n => document.querySelectorAll('.note .state.test').length >= n",
                    arg=1 if summary == "first" else 2,
                    timeout=5000,
                )
            # The tab reading the stream goes; the next in line takes it over.
            tabs.pop(0).page.close()
            assert streams_open(alerting, 1) == 1
        for t in tabs:
            t.clean()
    finally:
        ctx.close()


def test_screenshots_and_axe_on_the_alerts_page(browser: Browser, alerting: Served) -> None:
    if not rules(alerting):
        api(alerting, "POST", "alerts", {**RULE, "projectId": "shop"})
    SHOTS.mkdir(parents=True, exist_ok=True)
    for scheme in ("light", "dark"):
        for width in (375, 1440):
            ctx = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme)
            try:
                p = visit(ctx, page_url(alerting, "/alerts"))
                overflow = p.page.evaluate(
                    "document.documentElement.scrollWidth - document.documentElement.clientWidth"
                )
                whole_page(p.page, f"alerts-{width}-{scheme}.png")
                assert overflow <= 0, (width, scheme, overflow)
                p.clean()
            finally:
                ctx.close()
    ctx = browser.new_context(bypass_csp=True)  # axe is injected as a script
    source = AXE.read_text()
    try:
        p = visit(ctx, page_url(alerting, "/alerts"))
        states = {"with rules": p.page}
        for name, action in (("preview", "Preview"), ("problems", "Create rule")):
            p = visit(ctx, page_url(alerting, "/alerts"))
            p.page.fill("#f-threshold", "0" if name == "preview" else "not a number")
            p.page.click(f'button:text-is("{action}")')
            p.page.wait_for_load_state()
            states[name] = p.page
        p = visit(ctx, page_url(alerting, "/"))
        p.page.click(".inbox summary")
        states["header open"] = p.page
        for name, page in states.items():
            page.evaluate(source)
            result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
            serious = [
                (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
                for v in result["violations"]
                if v["impact"] in ("serious", "critical")
            ]
            assert not serious, (name, json.dumps(serious)[:2000])
    finally:
        ctx.close()
