"""The pages without a browser: links built from client text, caching, sign-in's limits."""

from __future__ import annotations

import re
import time
from html import unescape

import httpx
from starlette.applications import Starlette

from asgimon import ErrorEvent, MemoryStorage, Monitor

from .tokens import JWT_SETTINGS, claims, mint

TRICKY = "../../../host/logout?x=#y"


def client(monitor: Monitor) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(monitor.wrap(Starlette()), client=("127.0.0.1", 1))
    return httpx.AsyncClient(transport=transport, base_url="http://localhost")


async def test_a_fingerprint_with_slashes_links_to_its_own_group_page() -> None:
    storage = MemoryStorage()
    await storage.write(
        [
            ErrorEvent(
                project_id="shop",
                timestamp=time.time() - 60,
                error_type="KeyError",
                message="'sku'",
                fingerprint=TRICKY,
            )
        ]
    )
    async with client(Monitor(storage=storage)) as c:
        page = await c.get("/analytics/errors?project=shop&range=24h")
        [href] = {unescape(h) for h in re.findall(r'href="([^"]*/errors/[^"]*)"', page.text)}
        # One path segment under /errors/: nothing in it a browser would resolve elsewhere.
        assert href.startswith("/analytics/errors/..%2F..%2F..%2Fhost%2Flogout%3Fx%3D%23y?")
        group = await c.get(href)
        assert group.status_code == 200
        assert "KeyError" in group.text


async def test_api_answers_are_not_cached_and_assets_are() -> None:
    async with client(Monitor(storage=MemoryStorage())) as c:
        answer = await c.get("/analytics/api/dashboard/shop")
        assert answer.headers["cache-control"] == "private, no-store"
        page = await c.get("/analytics/?project=default")
        assert page.headers["cache-control"] == "no-store"
        css = await c.get("/analytics/static/asgimon.css")
        assert css.headers["cache-control"] == "public, max-age=3600"
        assert css.headers["content-type"].startswith("text/css")
        again = await c.get(
            "/analytics/static/asgimon.css", headers={"if-none-match": css.headers["etag"]}
        )
        assert again.status_code == 304
        assert (await c.get("/analytics/static/nope.css")).status_code == 404


async def sign_in(c: httpx.AsyncClient, token: str) -> httpx.Response:
    form = await c.get("/analytics/signin")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert csrf is not None
    return await c.post(
        "/analytics/signin",
        data={"token": token, "csrf_token": csrf.group(1)},
        headers={"origin": "http://localhost"},
    )


async def test_a_token_too_long_for_a_cookie_is_refused_with_a_reason() -> None:
    monitor = Monitor(storage=MemoryStorage(), **JWT_SETTINGS)
    async with client(monitor) as c:
        huge = mint(claims(sub="alice", projects=[f"project-{i}" for i in range(400)]))
        assert len(huge) > 3800
        answer = await sign_in(c, huge)
        assert answer.status_code == 400
        assert "too long for a browser" in answer.text
        assert "asgimon_session" not in answer.headers.get("set-cookie", "")
        ok = await sign_in(c, mint(claims(sub="alice", projects=["shop"])))
        assert ok.status_code == 303


async def test_refused_sign_ins_and_page_cookies_count_against_the_address() -> None:
    monitor = Monitor(storage=MemoryStorage(), api_rate_limit="5/minute", **JWT_SETTINGS)
    async with client(monitor) as c:
        statuses = [(await sign_in(c, "not-a-token")).status_code for _ in range(4)]
        c.cookies.set("asgimon_session", "bad", path="/analytics")
        statuses += [(await c.get("/analytics/errors")).status_code for _ in range(4)]
    # Refused tokens, by form or by cookie, until the address must wait.
    assert statuses[:2] == [401, 401]
    assert 429 in statuses
    assert statuses[-1] == 429
