"""The dashboard's pages in a real browser: Debian's Chromium driven by Playwright.

A uvicorn in a thread serves a host app with asgimon on a memory store seeded with a
history of every event kind (and with XSS payloads in every free-text field a client can
set). Each page is loaded in Chromium and checked against the JSON API's answer for the
same query: the figures a person reads are the API's, formatted. Screenshots of every page
at 375 and 1440 px, light and dark, go to ``artifacts/screenshots/``.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Dialog,
    Page,
    Playwright,
    sync_playwright,
)

from asgimon import DeploymentEvent, ErrorEvent, Event, FunctionInvocation
from asgimon.dashboard.pages.formats import count, ms, pct

from .browser_server import Served, serve
from .test_analytics_endpoints import world
from .tokens import JWT_SETTINGS, claims, mint

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "artifacts" / "screenshots"
AXE = ROOT / ".venv" / "node" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

XSS = (
    '<img src=x onerror="window.__xss=1">',
    '"><svg onload="window.__xss=2">',
    "<script>window.__xss=3</script>",
)
XSS_PROJECT = '<img src=x onerror="window.__xss=4">'
# No skip when Chromium or axe-core is missing: `make test` installs both, and a browser
# suite that quietly skips would hide a broken dashboard.


def planted(now: float) -> list[Event]:
    """Every free-text field a client sets, holding script."""
    out: list[Event] = []
    for i, payload in enumerate(XSS):
        out.append(
            FunctionInvocation(
                project_id="shop", timestamp=now - 600 - i, function_id=payload, duration_ms=12.0
            )
        )
        out.append(
            ErrorEvent(
                project_id="shop",
                timestamp=now - 700 - i,
                error_type="Xss" + str(i) + payload.replace("/", ""),
                message=payload,
                stack="Traceback:\n  " + payload,
                fingerprint=f"xss{i}",
                severity="low",
                endpoint="/x/" + payload,
                method="GET",
            )
        )
    out.append(
        DeploymentEvent(
            project_id="shop",
            timestamp=now - 900,
            deployment_id=XSS[0],
            type="completed",
            status="failure",
            duration_ms=1000.0,
            framework=XSS[1].replace("/", ""),
        )
    )
    out.append(
        DeploymentEvent(
            project_id=XSS_PROJECT, timestamp=now - 900, deployment_id="d", type="started"
        )
    )
    return out


@dataclass
class Loaded:
    page: Page
    console_errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def clean(self) -> None:
        assert not self.console_errors, self.console_errors
        assert not self.failed, self.failed


@pytest.fixture(scope="module")
def history() -> list[Event]:
    now = time.time()
    return [*world(now).all(), *planted(now)]


@pytest.fixture(scope="module")
def served(history: list[Event]) -> Iterator[Served]:
    with serve(history) as s:
        yield s


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
    yield b
    b.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1440, "height": 900})
    yield ctx
    ctx.close()


def visit(context: BrowserContext, url: str, *, status: int = 200) -> Loaded:
    page = context.new_page()
    loaded = Loaded(page)
    page.on(
        "console",
        lambda m: loaded.console_errors.append(m.text) if m.type == "error" else None,
    )
    page.on(
        "requestfailed",
        # Leaving a page cuts its live stream: that is the browser's doing, not a failure.
        lambda r: (
            None
            if "/api/stream" in r.url and r.failure == "net::ERR_ABORTED"
            else loaded.failed.append(f"{r.url}: {r.failure}")
        ),
    )
    page.on(
        "response",
        lambda r: (
            loaded.failed.append(f"{r.url}: {r.status}")
            if r.status >= 400 and r.url != url
            else None
        ),
    )
    response = page.goto(url)
    assert response is not None
    assert response.status == status, (url, response.status, page.content()[:2000])
    return loaded


def api(served: Served, path: str, **params: str) -> dict[str, Any]:
    url = f"{served.mount}/api/{path}" + (f"?{urlencode(params)}" if params else "")
    answer = httpx.get(url, timeout=10)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def card(page: Page, label: str) -> str:
    value = page.locator(".card", has=page.locator(f'dt:text-is("{label}")')).locator("dd.num")
    return value.inner_text().strip()


def column(page: Page, table: str, index: int) -> list[str]:
    """The text of one column of the table under the heading ``table``."""
    panel = page.locator("section.panel", has=page.locator(f'h2:text-is("{table}")'))
    cells = panel.locator(f":scope > table > tbody > tr > td:nth-child({index})")
    return [c.strip() for c in cells.all_inner_texts()]


def page_url(served: Served, path: str, **params: str) -> str:
    return f"{served.mount}{path}?{urlencode({'project': 'shop', **params})}"


# -- figures -------------------------------------------------------------------------------


def check_overview(page: Page, served: Served, range_: str) -> None:
    f = api(served, "dashboard/shop", range=range_)
    assert card(page, "Deployments") == count(f["totalDeployments"])
    assert card(page, "Deployment success") == pct(f["successRate"])
    assert card(page, "Avg deployment") == ms(f["avgDeploymentTime"])
    assert card(page, "Avg build") == ms(f["avgBuildTime"])
    assert card(page, "Function invocations") == count(f["totalFunctionInvocations"])
    assert card(page, "Errors") == count(f["totalErrors"])
    assert card(page, "Avg API latency") == ms(f["avgApiLatency"])
    assert card(page, "p95 API latency") == ms(f["p95ApiLatency"])
    assert column(page, "Recent deployments", 1) == [
        d["deploymentId"] for d in f["recentDeployments"]
    ]
    assert column(page, "Top errors", 3) == [count(g["count"]) for g in f["topErrors"]]


@pytest.mark.parametrize("range_", ["24h", "30d"])
def test_the_overview_shows_the_apis_figures(
    context: BrowserContext, served: Served, range_: str
) -> None:
    loaded = visit(context, page_url(served, "/", range=range_))
    check_overview(loaded.page, served, range_)
    loaded.clean()


def test_every_page_shows_the_apis_figures(context: BrowserContext, served: Served) -> None:
    rng = {"range": "30d"}
    p = visit(context, page_url(served, "/deployments", **rng))
    f = api(served, "deployments/shop", **rng)
    assert card(p.page, "Deployments") == count(f["totalDeployments"])
    assert card(p.page, "Failure rate") == pct(f["failureRate"])
    assert card(p.page, "p95 duration") == ms(f["p95Duration"])
    assert column(p.page, "History", 1) == [d["deploymentId"] for d in f["deployments"]]
    p.clean()

    p = visit(context, page_url(served, "/functions", **rng))
    f = api(served, "functions/shop", **rng)
    assert card(p.page, "Invocations") == count(f["totalInvocations"])
    assert card(p.page, "p99") == ms(f["p99ExecutionTime"])
    top = sorted(f["functions"], key=lambda r: -r["invocations"])
    assert column(p.page, "Top functions", 1) == [r["functionId"] for r in top]
    assert column(p.page, "Top functions", 2) == [count(r["invocations"]) for r in top]
    p.clean()

    p = visit(context, page_url(served, "/builds", **rng))
    f = api(served, "builds/shop", **rng)
    assert card(p.page, "Builds") == count(f["totalBuilds"])
    assert card(p.page, "Success rate") == pct(f["successRate"])
    assert column(p.page, "Phases", 4) == [ms(r["avgDuration"]) for r in f["phaseDurations"]]
    assert column(p.page, "Recent builds", 1) == [b["deploymentId"] for b in f["builds"]]
    p.clean()

    p = visit(context, page_url(served, "/errors", **rng))
    f = api(served, "errors/shop", **rng)
    assert card(p.page, "Errors") == count(f["totalErrors"])
    assert column(p.page, "Groups", 4) == [count(g["count"]) for g in f["groups"]]
    assert column(p.page, "Groups", 2)[0].split()[0] == f["groups"][0]["status"]
    p.clean()

    group = f["groups"][0]
    p = visit(context, page_url(served, "/errors/" + quote(group["fingerprint"]), **rng))
    same = [g for g in f["groups"] if g["fingerprint"] == group["fingerprint"]]
    assert card(p.page, "Occurrences in range") == count(sum(g["count"] for g in same))
    p.clean()

    p = visit(context, page_url(served, "/performance", sort="p95", **rng))
    f = api(served, "performance/shop", sort="p95", **rng)
    assert card(p.page, "p99") == ms(f["p99Latency"])
    assert card(p.page, "Apdex") == f"{f['apdex']:.2f}"
    names = [f"{e['method']} {e['endpoint']}" for e in f["endpoints"]]
    assert column(p.page, "Endpoints", 1) == names
    assert column(p.page, "Endpoints", 6) == [ms(e["p95"]) for e in f["endpoints"]]
    p.clean()

    e = f["endpoints"][0]
    p = visit(
        context,
        page_url(
            served, "/performance/endpoint", method=e["method"], endpoint=e["endpoint"], **rng
        ),
    )
    assert card(p.page, "Requests") == count(e["count"])
    assert card(p.page, "p95") == ms(e["p95"])
    p.clean()


def test_filters_and_the_range_change_what_is_shown(
    context: BrowserContext, served: Served
) -> None:
    p = visit(context, page_url(served, "/deployments", range="30d"))
    everything = column(p.page, "History", 3)
    assert {"success", "failure"} <= set(everything)
    # The form, as a person uses it: pick "failure" and apply.
    p.page.select_option('select[name="status"]', "failure")
    p.page.click('button:text-is("Apply")')
    p.page.wait_for_url(re.compile(r"status=failure"))
    shown = column(p.page, "History", 3)
    assert shown == [s for s in everything if s == "failure"]
    assert "range=30d" in p.page.url
    p.clean()

    p = visit(context, page_url(served, "/errors", range="30d", severity="critical"))
    f = api(served, "errors/shop", range="30d")
    critical = [g for g in f["groups"] if g["severity"] == "critical"]
    assert column(p.page, "Groups", 3) == ["critical"] * len(critical)
    p.clean()

    p = visit(context, page_url(served, "/", range="30d"))
    p.page.click('.quick a:text-is("24h")')
    p.page.wait_for_url(re.compile(r"range=24h"))
    check_overview(p.page, served, "24h")
    p.clean()


def test_bad_input_gives_a_page_with_a_clear_message(
    context: BrowserContext, served: Served
) -> None:
    cases = [
        (page_url(served, "/", range="2y"), 422, "range: must be one of"),
        (page_url(served, "/errors", severity="urgent"), 422, "severity: must be one of"),
        (f"{served.mount}/?project=nope", 404, "no project of that name"),
        (page_url(served, "/", colour="red"), 422, "colour: is not a parameter"),
        (page_url(served, "/performance/endpoint"), 422, "method: is required"),
        (
            page_url(served, "/performance/endpoint", method="x" * 5000, endpoint="/items"),
            422,
            "method: must be an HTTP method",
        ),
    ]
    for url, status, message in cases:
        p = visit(context, url, status=status)
        assert message in p.page.locator("main").inner_text()
        assert "Traceback" not in p.page.content()


def test_the_live_figures_move_when_requests_arrive(
    context: BrowserContext, served: Served
) -> None:
    p = visit(context, page_url(served, "/"))
    p.page.wait_for_selector("[data-live-state].on", timeout=5000)
    before = float(card(p.page, "Requests per second").replace(",", ""))
    with httpx.Client(base_url=served.base_url) as client:
        for _ in range(300):
            client.get("/work")
    p.page.wait_for_function(
        "b => parseFloat(document.querySelector('[data-live=requestsPerSecond]')"
        ".textContent.replace(/,/g, '')) > b",
        arg=before,
        timeout=5000,
    )
    p.clean()


def test_without_javascript_every_figure_is_there(browser: Browser, served: Served) -> None:
    ctx = browser.new_context(java_script_enabled=False)
    try:
        p = visit(ctx, page_url(served, "/", range="30d"))
        check_overview(p.page, served, "30d")
        # The live figures as of the page's load, and every chart's values as a table.
        assert card(p.page, "Requests per second")
        assert p.page.locator("details.values table").count() >= 3
        # Closed until asked for, and opened by its summary alone: every bucket's value.
        values = p.page.locator("details.values").first
        assert not values.locator("table").is_visible()
        values.locator("summary").click()
        assert values.locator("table").is_visible()
        assert values.locator("tbody tr").count() > 1
    finally:
        ctx.close()


def test_planted_script_never_runs(context: BrowserContext, served: Served) -> None:
    # A connection each: after its 500 for an exception, uvicorn closes the connection.
    with contextlib.suppress(httpx.TransportError):
        httpx.get(served.base_url + "/boom/" + quote(XSS[2]), headers={"user-agent": XSS[0]})
    httpx.get(served.base_url + "/" + quote(XSS[0]), headers={"user-agent": XSS[1]})
    time.sleep(0.6)  # two flushes
    urls = [
        page_url(served, path, range="24h")
        for path in ("/", "/functions", "/errors", "/deployments", "/performance")
    ]
    urls += [page_url(served, f"/errors/xss{i}", range="24h") for i in range(len(XSS))]
    urls.append(f"{served.mount}/?{urlencode({'project': XSS_PROJECT})}")
    shown = ""
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:  # an alert() would mean script ran
        dialogs.append(dialog.message)
        dialog.dismiss()

    context.on("dialog", on_dialog)
    for url in urls:
        p = visit(context, url)
        assert p.page.evaluate("window.__xss") is None, url
        assert p.page.locator('img[src="x"], main svg[onload]').count() == 0, url
        assert not dialogs
        shown += p.page.locator("main").inner_text()
        p.clean()
    # Shown as text, not dropped: the payloads are data a person must be able to read.
    for payload in XSS:
        assert payload in shown, payload


def test_axe_finds_no_serious_violation(browser: Browser, served: Served) -> None:
    ctx = browser.new_context(bypass_csp=True)  # axe is injected as a script
    source = AXE.read_text()
    try:
        for url in all_pages(served):
            p = visit(ctx, url)
            p.page.evaluate(source)
            result = p.page.evaluate("axe.run(document, {resultTypes: ['violations']})")
            serious = [
                (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
                for v in result["violations"]
                if v["impact"] in ("serious", "critical")
            ]
            assert not serious, (url, json.dumps(serious)[:2000])
    finally:
        ctx.close()


def all_pages(served: Served) -> list[str]:
    f = api(served, "errors/shop", range="30d")
    e = api(served, "performance/shop", range="30d")["endpoints"][0]
    return [
        page_url(served, "/", range="30d"),
        page_url(served, "/deployments", range="30d"),
        page_url(served, "/functions", range="30d"),
        page_url(served, "/builds", range="30d"),
        page_url(served, "/errors", range="30d"),
        page_url(served, "/errors/" + quote(f["groups"][0]["fingerprint"]), range="30d"),
        page_url(served, "/performance", range="30d"),
        page_url(
            served, "/performance/endpoint", method=e["method"], endpoint=e["endpoint"], range="30d"
        ),
        page_url(served, "/ratelimits", range="30d"),
    ]


def test_screenshots_of_every_page(browser: Browser, served: Served) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    names = [
        "overview",
        "deployments",
        "functions",
        "builds",
        "errors",
        "error-group",
        "performance",
        "endpoint",
        "ratelimits",
    ]
    for scheme in ("light", "dark"):
        for width in (375, 1440):
            ctx = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme)
            try:
                for name, url in zip(names, all_pages(served), strict=True):
                    p = visit(ctx, url)
                    # Nothing wider than the screen but what scrolls inside its own panel.
                    overflow = p.page.evaluate(
                        "document.documentElement.scrollWidth"
                        " - document.documentElement.clientWidth"
                    )
                    shot = SHOTS / f"{name}-{width}-{scheme}.png"
                    p.page.screenshot(path=str(shot), full_page=True)
                    assert overflow <= 0, (name, width, overflow)
                    assert shot.stat().st_size > 5000
                    p.clean()
            finally:
                ctx.close()


# -- sign-in -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(history: list[Event]) -> Iterator[Served]:
    with serve(history, **JWT_SETTINGS) as s:
        yield s


def test_sign_in_and_sign_out(browser: Browser, guarded: Served) -> None:
    ctx = browser.new_context()
    try:
        p = visit(ctx, page_url(guarded, "/errors", range="30d"))
        assert "/signin" in p.page.url  # sent to sign in, and back after
        token = mint(claims(sub="alice", projects=["shop"]))
        p.page.fill("#token", token)
        p.page.click('button:text-is("Sign in")')
        p.page.wait_for_url(re.compile(r"/analytics/errors\?"))
        assert p.page.locator("h1").inner_text().startswith("Errors")
        [cookie] = [c for c in ctx.cookies() if c["name"] == "asgimon_session"]
        assert cookie["httpOnly"]
        assert cookie["sameSite"] == "Strict"
        # The cookie reads; it does not write: ingestion still wants a key or a bearer.
        answer = p.page.request.post(
            guarded.mount + "/api/events",
            data=json.dumps({"events": []}),
            headers={"content-type": "application/json"},
        )
        assert answer.status == 401
        p.page.click('button:text-is("Sign out")')
        p.page.wait_for_url(re.compile(r"/signin"))
        assert not [c for c in ctx.cookies() if c["name"] == "asgimon_session"]
        again = visit(ctx, page_url(guarded, "/"))
        assert "/signin" in again.page.url
        p.clean()
    finally:
        ctx.close()


def test_a_bad_token_and_a_forged_form_are_refused(browser: Browser, guarded: Served) -> None:
    ctx = browser.new_context()
    try:
        p = visit(ctx, guarded.mount + "/signin")
        p.page.fill("#token", "not-a-token")
        p.page.click('button:text-is("Sign in")')
        assert "the token was refused" in p.page.locator(".error").inner_text()
        token = mint(claims(sub="alice", projects=["shop"]))
        # A form posted from elsewhere: no CSRF cookie of ours, another Origin.
        forged = httpx.post(
            guarded.mount + "/signin",
            content=urlencode({"token": token, "csrf_token": "guess"}),
            headers={
                "content-type": "application/x-www-form-urlencoded",
                "origin": "http://evil.example",
            },
        )
        assert forged.status_code == 403
        assert "asgimon_session" not in forged.headers.get("set-cookie", "")
        # Our own CSRF cookie and token, but from another origin.
        csrf = next(c["value"] for c in ctx.cookies() if c["name"] == "asgimon_csrf")
        cross = httpx.post(
            guarded.mount + "/signin",
            content=urlencode({"token": token, "csrf_token": csrf}),
            headers={
                "content-type": "application/x-www-form-urlencoded",
                "origin": "http://evil.example",
                "cookie": f"asgimon_csrf={csrf}",
            },
        )
        assert cross.status_code == 403
        assert "asgimon_session" not in cross.headers.get("set-cookie", "")
    finally:
        ctx.close()


def test_every_answer_carries_the_security_headers(served: Served) -> None:
    for url in [*all_pages(served), served.mount + "/static/asgimon.css", served.mount + "/signin"]:
        headers = httpx.get(url).headers
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "'unsafe-inline'" not in csp
        assert "frame-ancestors 'none'" in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "same-origin"


# -- the error lifecycle -------------------------------------------------------------------


def group_status(served: Served, fingerprint: str) -> dict[str, Any]:
    return api(served, f"errors/shop/groups/{quote(fingerprint, safe='')}", range="24h")


def boom(served: Served, text: str) -> None:
    assert httpx.get(f"{served.base_url}/boom/{text}", timeout=10).status_code == 500


def settled(served: Served, fingerprint: str, **want: Any) -> dict[str, Any]:
    """The group once the lifecycle caught up with what was recorded."""
    deadline = time.monotonic() + 10
    while True:
        found = group_status(served, fingerprint)
        if all(found[k] == v for k, v in want.items()) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def boom_group(served: Served) -> str:
    """The fingerprint of the host app's ``/boom`` error, once recorded."""
    deadline = time.monotonic() + 10
    while True:
        groups = api(served, "errors/shop", range="24h", type="RuntimeError")["groups"]
        mine = [g for g in groups if (g["message"] or "").startswith("boom at")]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    (group,) = mine
    fingerprint: str = group["fingerprint"]
    return fingerprint


def test_resolve_ignore_and_a_regression_through_the_page(browser: Browser, served: Served) -> None:
    boom(served, "checkout")
    fp = boom_group(served)
    # Without JavaScript: the forms are plain HTML forms.
    ctx = browser.new_context(java_script_enabled=False, viewport={"width": 1440, "height": 900})
    try:
        p = visit(ctx, page_url(served, "/errors", range="24h", status="unresolved"))
        p.page.click(f'tr[data-fingerprint="{fp}"] a')
        p.page.wait_for_url(re.compile("/errors/"))
        assert p.page.locator(".status-line .state").first.inner_text() == "unresolved"
        p.page.click('button:text-is("Resolve")')
        p.page.wait_for_load_state()
        assert p.page.locator(".status-line .state").first.inner_text() == "resolved"
        assert "resolved" in p.page.locator(".status-line").inner_text()
        assert group_status(served, fp)["status"] == "resolved"
        p.clean()

        p = visit(ctx, page_url(served, "/errors", range="24h", status="resolved"))
        assert p.page.locator(f'tr[data-fingerprint="{fp}"]').count() == 1
        p = visit(ctx, page_url(served, "/errors", range="24h", status="unresolved"))
        assert p.page.locator(f'tr[data-fingerprint="{fp}"]').count() == 0

        boom(served, "checkout-again")
        after = settled(served, fp, regressed=True)
        assert (after["status"], after["regressed"], after["regressions"]) == (
            "unresolved",
            True,
            1,
        )
        p = visit(ctx, page_url(served, "/errors/" + quote(fp, safe=""), range="24h"))
        tags = p.page.locator(".status-line .state").all_inner_texts()
        assert tags[:2] == ["unresolved", "regressed"]
        assert card(p.page, "Regressions") == "1"
        p.page.select_option('select[name="ignore"]', "count:10")
        p.page.click('button:text-is("Ignore")')
        p.page.wait_for_load_state()
        assert "for 10 occurrences" in p.page.locator(".status-line").inner_text()
        assert group_status(served, fp)["ignoreCount"] == 10
        p.clean()
    finally:
        ctx.close()
    # With JavaScript, the status filter as a person uses it.
    ctx = browser.new_context(viewport={"width": 1440, "height": 900})
    try:
        p = visit(ctx, page_url(served, "/errors", range="24h"))
        p.page.select_option('select[name="status"]', "ignored")
        p.page.click('button:text-is("Apply")')
        p.page.wait_for_url(re.compile(r"status=ignored"))
        rows = p.page.locator("section.panel", has=p.page.locator('h2:text-is("Groups")'))
        assert rows.locator(f'tr[data-fingerprint="{fp}"]').count() == 1
        assert set(column(p.page, "Groups", 2)) == {"ignored"}
        p.page.click(f'tr[data-fingerprint="{fp}"] a')
        p.page.wait_for_url(re.compile("/errors/"))
        p.page.click('button:text-is("Unresolve")')
        p.page.wait_for_load_state()
        assert group_status(served, fp)["status"] == "unresolved"
        p.clean()
    finally:
        ctx.close()


def test_a_forged_lifecycle_form_changes_nothing(browser: Browser, served: Served) -> None:
    boom(served, "forged")
    fp = boom_group(served)
    before = group_status(served, fp)
    url = page_url(served, "/errors/" + quote(fp, safe=""))
    # From another site, the guard answers as to a stranger; from here without this
    # browser's token, the form is refused.
    for headers, body, status in (
        ({"origin": "http://evil.example"}, {"action": "resolve", "csrf_token": "guess"}, 404),
        ({"origin": served.base_url}, {"action": "resolve"}, 403),
        ({"origin": served.base_url}, {"action": "resolve", "csrf_token": "guess"}, 403),
    ):
        forged = httpx.post(
            url,
            content=urlencode(body),
            headers={"content-type": "application/x-www-form-urlencoded", **headers},
        )
        assert forged.status_code == status
    after = group_status(served, fp)
    assert (after["status"], after["changedAt"]) == (before["status"], before["changedAt"])


def test_the_errors_list_resolves_a_group_in_place(browser: Browser, served: Served) -> None:
    boom(served, "from-the-list")
    fp = boom_group(served)
    ctx = browser.new_context(java_script_enabled=False, viewport={"width": 1440, "height": 900})
    try:
        p = visit(ctx, page_url(served, "/errors", range="24h", type="RuntimeError"))
        row = p.page.locator(f'tr[data-fingerprint="{fp}"]')
        row.locator('button:text-is("Unresolve"), button:text-is("Resolve")').first.click()
        p.page.wait_for_load_state()
        # Back on the list it was sent from, filters kept, the row's state changed.
        assert "/errors?" in p.page.url
        assert "type=RuntimeError" in p.page.url
        state = group_status(served, fp)["status"]
        assert p.page.locator(f'tr[data-fingerprint="{fp}"] .state').first.inner_text() == state
        p.clean()
    finally:
        ctx.close()
