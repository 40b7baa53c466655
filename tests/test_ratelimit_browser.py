"""The rate-limits page in a real browser: refusals by key and endpoint as the API counts
them, and an override added and removed through its form (CSRF-checked, JavaScript off)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser

from asgimon.ratelimit.keys import hashed

from .browser_server import Served, serve
from .test_pages_browser import SHOTS, card, column, page_url, visit

pytest_plugins = ["tests.test_pages_browser"]  # its browser and playwright fixtures

ME = "addr:127.0.0.1"


@pytest.fixture(scope="module")
def limited() -> Iterator[Served]:
    with serve([], rate_limit_enabled=True, rate_limit_max=3, rate_limit_burst=0) as s:
        yield s


def figures(served: Served) -> dict[str, Any]:
    r = httpx.get(f"{served.mount}/api/ratelimits/shop", params={"range": "1h"}, timeout=10)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_the_page_shows_refusals_and_sets_and_removes_an_override(
    browser: Browser, limited: Served
) -> None:
    statuses = [httpx.get(f"{limited.base_url}/work", timeout=10).status_code for _ in range(8)]
    assert statuses.count(429) == 5
    deadline = time.monotonic() + 10
    while figures(limited)["totalDenied"] < 5:  # counted per second, then written
        assert time.monotonic() < deadline, figures(limited)
        time.sleep(0.1)

    ctx = browser.new_context(java_script_enabled=False, viewport={"width": 1440, "height": 900})
    try:
        p = visit(ctx, page_url(limited, "/ratelimits", range="1h"))
        assert card(p.page, "Refused") == "5"
        assert card(p.page, "Throttled keys") == "1"
        assert column(p.page, "Throttled keys", 1) == [hashed(ME)[:16]]
        assert column(p.page, "Throttled endpoints", 1) == ["GET /work"]
        assert p.page.locator("figure", has_text="Refused requests").locator("svg").count() == 1
        SHOTS.mkdir(parents=True, exist_ok=True)
        p.page.screenshot(path=str(SHOTS / "ratelimits-refusals.png"), full_page=True)

        p.page.fill('input[name="subject"]', ME)
        p.page.fill('input[name="rate"]', "50/minute")
        p.page.fill('input[name="note"]', "the load test box")
        p.page.click('button:text-is("Set override")')
        p.page.wait_for_load_state()
        assert "/ratelimits" in p.page.url
        assert column(p.page, "Overrides", 1) == [ME]
        assert column(p.page, "Overrides", 3) == ["the load test box"]
        # In force at once: this client's next request meets its own limit.
        allowed = httpx.get(f"{limited.base_url}/work", timeout=10)
        assert allowed.status_code == 200
        assert allowed.headers["ratelimit-policy"] == '"override";q=50;w=60'
        p.page.screenshot(path=str(SHOTS / "ratelimits-override.png"), full_page=True)
        p.clean()

        p.page.click(f'button[aria-label="Remove the override of {ME}"]')
        p.page.wait_for_load_state()
        assert p.page.locator("section.panel", has_text="Overrides").locator("table").count() == 0
        assert limited.monitor.rate_limits.overrides() == []
        p.clean()
    finally:
        ctx.close()


def test_a_forged_override_form_changes_nothing(limited: Served) -> None:
    r = httpx.post(
        f"{limited.mount}/ratelimits/overrides?project=shop",
        data={"action": "set", "subject": ME, "rate": "1000000/minute", "csrf_token": "forged"},
        headers={"origin": limited.base_url},
        timeout=10,
    )
    assert r.status_code == 403
    assert limited.monitor.rate_limits.overrides() == []
