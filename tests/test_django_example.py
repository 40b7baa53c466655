"""Django under asgimon: the integration in process, and the example as a newcomer starts it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.asgi import get_asgi_application
from django.core.signals import got_request_exception
from django.db import connection, connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import Client, override_settings
from django.urls import include, path
from starlette.requests import Request

from asgimon import ApiCall, ErrorEvent, Monitor
from asgimon.context import current
from asgimon.dashboard.auth import Principal
from asgimon.plugins.django import MonitoredDjango, QueryTimer, RouteResolver, monitored, staff_auth
from asgimon.plugins.queries import QUERIES
from asgimon.testing import memory_monitor, recorded

from .pg_cluster import free_port

ROOT = Path(__file__).resolve().parent.parent
DEMO_USER, DEMO_PASSWORD = "demo", "demo-password"


class Urls:
    """An URLconf made in a test (``ROOT_URLCONF`` takes a module or any such object)."""

    def __init__(self, *patterns: Any) -> None:
        self.urlpatterns = [*patterns, path("", include("examples.django_app.urls"))]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The example's settings on a fresh SQLite file, migrated and filled as it starts."""
    saved = {k: os.environ.get(k) for k in ("DJANGO_SETTINGS_MODULE", "DJANGO_DEMO_DB")}
    os.environ["DJANGO_SETTINGS_MODULE"] = "examples.django_app.settings"
    os.environ["DJANGO_DEMO_DB"] = str(tmp_path_factory.mktemp("django") / "shop.sqlite3")
    from examples.django_app.__main__ import prepare

    prepare(DEMO_USER, DEMO_PASSWORD)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
async def shop_app(shop: None) -> AsyncIterator[MonitoredDjango]:
    monitor = memory_monitor(route_resolver=RouteResolver(), auth=staff_auth)
    app = monitored(get_asgi_application(), monitor, time_queries=False)
    try:
        async with monitor:
            yield app
    finally:
        app.close()  # or the next test's exceptions would reach this monitor too


def client(app: MonitoredDjango, cookie: str | None = None) -> httpx.AsyncClient:
    cookies = {settings.SESSION_COOKIE_NAME: cookie} if cookie else None
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1", cookies=cookies
    )


async def stored(monitor: Monitor, kind: type[Any]) -> list[Any]:
    return [ev for ev in await recorded(monitor, kind.kind) if isinstance(ev, kind)]


# -- route templates ---------------------------------------------------------------------


async def test_requests_are_filed_under_their_django_route(shop_app: MonitoredDjango) -> None:
    async with client(shop_app) as c:
        for url, status in [
            ("/items/3/", 200),
            ("/items/4/", 200),
            ("/items/999/", 404),
            ("/items/", 200),
            ("/hello/", 200),
            ("/", 200),
            ("/admin/login/", 200),
            ("/nowhere/", 404),
            ("/items/3", 301),  # APPEND_SLASH's redirect: no pattern matches the path asked
        ]:
            assert (await c.get(url)).status_code == status, url
    calls = await stored(shop_app.monitor, ApiCall)
    assert [(call.endpoint, call.status) for call in calls] == [
        ("/items/<int:pk>/", 200),
        ("/items/<int:pk>/", 200),
        ("/items/<int:pk>/", 404),
        ("/items/", 200),
        ("/hello/", 200),
        ("/", 200),
        ("/admin/login/", 200),
        ("<unmatched>", 404),
        ("<unmatched>", 301),
    ]


def test_the_route_is_the_path_below_root_path_and_follows_the_urlconf(shop: None) -> None:
    routes = RouteResolver()

    def route(path_: str, root: str = "") -> str | None:
        return routes({"type": "http", "path": path_, "root_path": root})

    assert route("/shop/items/3/", "/shop") == "/items/<int:pk>/"
    assert route("/admin/shop/item/7/change/") == "/admin/shop/item/<path:object_id>/change/"
    # The admin's app index is a regex pattern: its anchors go, the pattern stays.
    assert route("/admin/shop/") == "/admin/(?P<app_label>auth|shop)/"
    assert route("/items/x/") is None
    assert route("/items/3/") == "/items/<int:pk>/"
    with override_settings(ROOT_URLCONF=Urls(path("items/<slug:slug>/", lambda r: None))):
        assert route("/items/3/") == "/items/<slug:slug>/"  # not the answer remembered
    assert route("/items/3/") == "/items/<int:pk>/"
    with override_settings(ROOT_URLCONF="tests.no_such_urlconf"):
        assert route("/items/3/") is None  # a broken URLconf: no template, and no raise
    long = "/items/" + "9" * 600 + "/"
    assert route(long) == "/items/<int:pk>/"  # too long to remember, resolved all the same


# -- errors ------------------------------------------------------------------------------


def frames_of(error: ErrorEvent) -> list[dict[str, Any]]:
    assert error.exception
    chain: list[dict[str, Any]] = json.loads(error.exception)
    frames: list[dict[str, Any]] = chain[0]["frames"]
    return frames


async def test_a_failing_sync_view_is_reported_once_with_its_stack(
    shop_app: MonitoredDjango,
) -> None:
    async with client(shop_app) as c:
        response = await c.get("/boom/", headers={"x-request-id": "req-1"})
    assert response.status_code == 500  # Django's own error page, as without asgimon
    [error] = await stored(shop_app.monitor, ErrorEvent)  # not a second one for the 500
    assert error.error_type == "RuntimeError"
    assert error.message == "the shop's /boom/ view always fails"
    assert (error.endpoint, error.method, error.request_id) == ("/boom/", "GET", "req-1")
    assert (error.severity, error.handled) == ("high", False)
    in_app = [f for f in frames_of(error) if f["inApp"]]
    assert [(f["module"], f["function"]) for f in in_app] == [
        ("examples.django_app.shop.views", "boom")
    ]
    assert "raise RuntimeError" in error.stack
    [call] = await stored(shop_app.monitor, ApiCall)
    assert (call.endpoint, call.status) == ("/boom/", 500)


async def test_a_failing_async_view_is_reported_from_its_request(
    shop_app: MonitoredDjango,
) -> None:
    async def shelf(request: HttpRequest, name: str) -> HttpResponse:
        raise LookupError(f"no shelf {name}")

    with override_settings(ROOT_URLCONF=Urls(path("shelves/<slug:name>/", shelf))):
        async with client(shop_app) as c:
            assert (await c.get("/shelves/top/")).status_code == 500
    [error] = await stored(shop_app.monitor, ErrorEvent)
    assert (error.error_type, error.endpoint) == ("LookupError", "/shelves/<slug:name>/")
    assert any(f["function"].endswith("shelf") and f["inApp"] for f in frames_of(error))


async def test_exceptions_outside_a_recorded_request_are_left_alone(
    shop_app: MonitoredDjango,
) -> None:
    try:
        raise ValueError("a management command failed")
    except ValueError:
        got_request_exception.send(sender=None, request=None)
    assert await stored(shop_app.monitor, ErrorEvent) == []


# -- database queries ----------------------------------------------------------------------


def count_items(timer: QueryTimer) -> int:
    with connection.execute_wrapper(timer):
        n: int = get_item_model().objects.count()
    return n


def get_item_model() -> Any:
    from examples.django_app.shop.models import Item

    return Item


async def test_each_statement_is_timed_inside_its_request(shop_app: MonitoredDjango) -> None:
    """Sync views and the async ORM run in other threads: the request is seen there too."""
    seen: list[tuple[str, float, str, str | None]] = []

    def record(statement: str, duration_ms: float, *, database: str = "") -> None:
        ctx = current()
        path_ = None if ctx is None or ctx.scope is None else ctx.scope["path"]
        seen.append((statement, duration_ms, database, path_))

    timer = QueryTimer(record)

    def sync_view(request: HttpRequest) -> JsonResponse:
        return JsonResponse({"n": count_items(timer)})

    async def async_view(request: HttpRequest) -> JsonResponse:
        return JsonResponse({"n": await sync_to_async(count_items)(timer)})

    urls = Urls(path("sync-count/", sync_view), path("async-count/", async_view))
    with override_settings(ROOT_URLCONF=urls):
        async with client(shop_app) as c:
            assert (await c.get("/sync-count/")).json() == {"n": 8}
            assert (await c.get("/async-count/")).json() == {"n": 8}
    assert [(s.split()[0], db, p) for s, _, db, p in seen] == [
        ("SELECT", "default", "/sync-count/"),
        ("SELECT", "default", "/async-count/"),
    ]
    assert all(0 < ms < 1000 for _, ms, _, _ in seen)
    assert 'FROM "shop_item"' in seen[0][0]


async def test_the_statements_of_a_request_ride_with_it(shop: None) -> None:
    monitor = memory_monitor(route_resolver=RouteResolver())
    app = monitored(get_asgi_application(), monitor)
    try:
        async with monitor, client(app) as c:
            assert (await c.get("/n-plus-one/")).status_code == 200
            [call] = await stored(monitor, ApiCall)
    finally:
        app.close()
    assert call.figures is not None
    statements = {
        (database, statement.split(" FROM ")[1].split()[0]): n
        for (database, statement), (n, _, _) in call.figures[QUERIES].items()
    }
    # The N+1 the view makes on purpose: the items once, then a query per item's category.
    assert statements == {("default", '"shop_item"'): 1, ("default", '"shop_category"'): 8}


async def test_every_connection_django_opens_gets_a_timer(shop: None) -> None:
    mine: list[str] = []

    def spy(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        mine.append(sql)
        return execute(sql, params, many, context)

    def first_wrapper() -> dict[str, Any]:
        # A connection opened inside the caller's own wrapper gives that one back at exit.
        connection.close()
        with connection.execute_wrapper(spy):
            get_item_model().objects.count()
        return {"timers": [type(w).__name__ for w in connection.execute_wrappers]}

    def sync_view(request: HttpRequest) -> JsonResponse:
        return JsonResponse(first_wrapper())

    async def async_view(request: HttpRequest) -> JsonResponse:
        return JsonResponse(await sync_to_async(first_wrapper)())

    monitor = memory_monitor(route_resolver=RouteResolver())
    app = monitored(get_asgi_application(), monitor)
    try:
        urls = Urls(path("sync/", sync_view), path("async/", async_view))
        with override_settings(ROOT_URLCONF=urls):
            async with monitor, client(app) as c:
                assert (await c.get("/sync/")).json() == {"timers": ["QueryTimer"]}
                assert (await c.get("/async/")).json() == {"timers": ["QueryTimer"]}
    finally:
        app.close()
    assert len(mine) == 2


# -- the dashboard's sign-in ----------------------------------------------------------------


@pytest.fixture(scope="module")
def sessions(shop: None) -> dict[str, str]:
    """A Django session key per kind of user, signed in as through the admin's login."""
    users = get_user_model().objects
    made = {
        "staff": users.create_user("staff", password="pw-1", is_staff=True),
        "superuser": users.create_user("root", password="pw-2", is_superuser=True),
        "customer": users.create_user("customer", password="pw-3"),
        "deactivated": users.create_user("former", password="pw-4", is_staff=True),
        "password changed": users.create_user("moved", password="pw-5", is_staff=True),
    }
    keys = {}
    for name, user in made.items():
        browser = Client()
        browser.force_login(user)
        keys[name] = browser.cookies[settings.SESSION_COOKIE_NAME].value
    made["deactivated"].is_active = False
    made["deactivated"].save()
    made["password changed"].set_password("pw-6")  # Django signs its sessions out
    made["password changed"].save()
    keys["unknown"] = "x" * 32
    connections.close_all()
    return keys


def dashboard_request(cookie: str | None, method: str = "GET", below: str = "/api/x") -> Request:
    headers = [(b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode())] if cookie else []
    scope = {
        "type": "http",
        "method": method,
        "path": "/analytics" + below,
        "root_path": "/analytics",
        "query_string": b"",
        "headers": headers,
    }
    return Request(scope)


@pytest.mark.parametrize(
    ("who", "admin"),
    [
        ("staff", True),
        ("superuser", True),
        ("customer", False),
        ("deactivated", False),
        ("password changed", False),
        ("unknown", False),
    ],
)
async def test_staff_users_are_admins_of_the_dashboard(
    sessions: dict[str, str], who: str, admin: bool
) -> None:
    principal = await staff_auth(dashboard_request(sessions[who]))
    if admin:
        assert isinstance(principal, Principal)
        assert principal.admin
        assert principal.subject.startswith("django:")
    else:
        assert principal is None


async def test_the_session_cookie_reads_and_never_changes_the_api(
    sessions: dict[str, str],
) -> None:
    staff = sessions["staff"]
    assert await staff_auth(dashboard_request(None)) is None
    assert await staff_auth(dashboard_request(staff, "HEAD")) is not None
    # A page's own form checks its CSRF token; the JSON API would take a forged request.
    assert await staff_auth(dashboard_request(staff, "POST", "/errors/abc")) is not None
    for method in ("POST", "PATCH", "DELETE"):
        assert await staff_auth(dashboard_request(staff, method, "/api/alerts")) is None


async def test_the_dashboard_opens_to_staff_only(
    shop_app: MonitoredDjango, sessions: dict[str, str]
) -> None:
    api = "/analytics/api/performance/default"
    async with client(shop_app) as anonymous:
        assert (await anonymous.get(api)).status_code == 401
        page = await anonymous.get("/analytics/")
        assert (page.status_code, page.headers["location"]) == (303, "/analytics/signin?next=%2F")
    async with client(shop_app, sessions["customer"]) as customer:
        assert (await customer.get(api)).status_code == 401
    async with client(shop_app, sessions["staff"]) as staff:
        assert (await staff.get(api)).status_code == 200
        assert (await staff.get("/analytics/")).status_code == 200


# -- the example, started as a newcomer starts it ------------------------------------------


def sign_in(c: httpx.Client) -> None:
    """Through the admin's login form, with its CSRF token, as a browser would."""
    form = c.get("/admin/login/?next=/analytics/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
    assert token is not None, form.text[:500]
    answer = c.post(
        "/admin/login/?next=/analytics/",
        data={
            "csrfmiddlewaretoken": token.group(1),
            "username": DEMO_USER,
            "password": DEMO_PASSWORD,
            "next": "/analytics/",
        },
    )
    assert (answer.status_code, answer.headers.get("location")) == (302, "/analytics/"), answer.text
    assert "sessionid" in c.cookies  # Django's session cookie, the example keeps its name


def wait_for(c: httpx.Client, url: str, done: Callable[[Any], bool], what: str) -> Any:
    body: Any = None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        r = c.get(url)
        assert r.status_code == 200, r.text
        body = r.json()
        if done(body):
            return body
        time.sleep(0.2)
    pytest.fail(f"{what} never showed: {body}")


@pytest.mark.slow
def test_the_django_example_serves_its_data_on_the_api_and_the_pages(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_DEMO_DB": str(tmp_path / "shop.sqlite3"),
        "ANALYTICS_STORAGE_URL": f"sqlite:///{tmp_path / 'asgimon.db'}",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the example names its own
    proc = subprocess.Popen(
        [sys.executable, "-m", "examples.django_app", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().decode()
        base = f"http://127.0.0.1:{port}"
        assert f"{base}/analytics/" in first, first  # the dashboard's address comes first
        with httpx.Client(base_url=base, timeout=10) as c:
            for _ in range(100):  # the banner is printed just before uvicorn listens
                try:
                    c.get("/hello/")
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            for url, status in [
                ("/items/3/", 200),
                ("/items/5/", 200),
                ("/items/", 200),
                ("/n-plus-one/", 200),
                ("/boom/", 500),
                ("/nowhere/", 404),
            ]:
                assert c.get(url).status_code == status, url
            anonymous = c.get("/analytics/api/performance/default")
            assert anonymous.status_code == 401  # an auth hook is set: loopback is no pass
            assert c.get("/analytics/").status_code == 303  # to the sign-in page
            sign_in(c)

            def all_there(body: Any) -> bool:
                found = {e["endpoint"] for e in body["endpoints"]}
                return {"/items/<int:pk>/", "/boom/", "/n-plus-one/"} <= found

            performance = wait_for(
                c, "/analytics/api/performance/default", all_there, "the endpoints"
            )
            counts = {(e["endpoint"], e["method"]): e["count"] for e in performance["endpoints"]}
            assert counts[("/items/<int:pk>/", "GET")] == 2
            assert counts[("/hello/", "GET")] >= 1
            assert counts[("<unmatched>", "GET")] == 1
            assert not [e for e in counts if e[0].startswith("/items/3")]  # no raw paths

            def n_plus_one(body: Any) -> bool:
                return any(q["endpoint"] == "/n-plus-one/" for q in body["queries"])

            queries = wait_for(
                c, "/analytics/api/performance/default", n_plus_one, "the statements"
            )["queries"]
            mine = [q for q in queries if q["endpoint"] == "/n-plus-one/"]
            assert {q["database"] for q in mine} == {"default"}
            [repeated] = [q for q in mine if q["nPlusOneRequests"]]
            assert (repeated["requests"], repeated["calls"]) == (1, 8)
            assert 'FROM "shop_category"' in repeated["statement"]
            assert any(q["endpoint"] == "/items/<int:pk>/" for q in queries)

            errors = wait_for(
                c, "/analytics/api/errors/default", lambda b: b["totalErrors"] > 0, "the error"
            )
            assert errors["totalErrors"] == 1  # the exception, not also its 500
            [boom] = errors["recentErrors"]
            assert (boom["type"], boom["endpoint"], boom["handled"]) == (
                "RuntimeError",
                "/boom/",
                False,
            )
            group = c.get(f"/analytics/api/errors/default/groups/{boom['fingerprint']}").json()
            in_app = [f for f in group["exception"][0]["frames"] if f["inApp"]]
            assert [f["function"] for f in in_app] == ["boom"]
            assert in_app[0]["filename"] == "examples/django_app/shop/views.py"

            page = c.get("/analytics/performance")
            assert page.status_code == 200
            assert "/items/&lt;int:pk&gt;/" in page.text
            assert c.get(f"/analytics/errors/{boom['fingerprint']}").status_code == 200
            assert c.get("/analytics/").status_code == 200
            health = c.get("/analytics/api/health").json()
            assert health["recorder"]["internalErrors"] == 0
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C, as a person stops it
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            pytest.fail("the example did not stop within 20 s of Ctrl-C:\n" + out.decode())
    assert proc.returncode == 0, out.decode()[-3000:]
