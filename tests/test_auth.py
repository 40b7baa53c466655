"""Who may read the analytics API: JWTs (HS256, RS256), a host hook, loopback; and a tenant
matrix generated from the route table: no principal ever reads or writes another's project."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount, Route

from asgimon import ApiCall, ConfigError, DeploymentEvent, ErrorEvent, MemoryStorage, Monitor
from asgimon.alerts.records import SILENCE, Record
from asgimon.alerts.rules import AlertRule
from asgimon.dashboard.auth import Principal
from asgimon.settings import Settings

from .tokens import AUDIENCE, ISSUER, JWT_SETTINGS, SECRET, bearer, claims, mint

NOW = time.time()
MARK_A, MARK_B = "/only-in-tenant-a", "/only-in-tenant-b"
GROUP = "a-group-in-both-tenants"  # one fingerprint, two projects: neither sees the other's


def token(extra: dict[str, Any], key: Any = SECRET, algorithm: str = "HS256") -> str:
    return mint(extra, key, algorithm)


def client(monitor: Monitor, host: str = "203.0.113.9") -> httpx.AsyncClient:
    """A remote client by default: with auth configured, where it comes from does not matter."""
    transport = httpx.ASGITransport(monitor.wrap(Starlette()), client=(host, 4000))
    return httpx.AsyncClient(transport=transport, base_url="http://analytics.example")


async def tenant_data(storage: MemoryStorage) -> None:
    events = []
    for project, mark in (("tenant-a", MARK_A), ("tenant-b", MARK_B)):
        events += [
            ApiCall(
                project_id=project,
                timestamp=NOW - 3600,
                endpoint=mark,
                duration_ms=12.0,
                total_ms=12.0,
            ),
            DeploymentEvent(
                project_id=project,
                timestamp=NOW - 1800,
                deployment_id="dep" + mark.replace("/", "-"),
                type="completed",
                status="success",
                framework="fw" + mark.replace("/", "-"),
            ),
            ErrorEvent(
                project_id=project,
                timestamp=NOW - 900,
                error_type="Err" + mark.replace("/", "_"),
                message="boom " + mark,
                fingerprint=GROUP,
            ),
        ]
    await storage.write(events)


@pytest.fixture
async def monitor() -> Monitor:
    storage = MemoryStorage()
    await tenant_data(storage)
    return Monitor(storage=storage, api_rate_limit=None, **JWT_SETTINGS)


# -- JWT ---------------------------------------------------------------------------------


async def test_a_token_opens_its_projects_and_only_those(monitor: Monitor) -> None:
    async with client(monitor) as c:
        mine = await c.get(
            "/analytics/api/performance/tenant-a",
            headers=bearer(token({"sub": "alice", "projects": ["tenant-a"]})),
        )
        theirs = await c.get(
            "/analytics/api/performance/tenant-b",
            headers=bearer(token({"sub": "alice", "projects": ["tenant-a"]})),
        )
    assert mine.status_code == 200
    assert [e["endpoint"] for e in mine.json()["endpoints"]] == [MARK_A]
    assert theirs.status_code == 403
    assert theirs.json()["error"]["code"] == "forbidden_project"
    assert MARK_B not in theirs.text


async def test_an_admin_token_sees_every_project(monitor: Monitor) -> None:
    async with client(monitor) as c:
        response = await c.get(
            "/analytics/api/overview", headers=bearer(token({"sub": "ops", "admin": True}))
        )
        by_role = await c.get(
            "/analytics/api/performance/tenant-b",
            headers=bearer(token({"sub": "ops", "role": "admin"})),
        )
    assert [p["projectId"] for p in response.json()["projects"]] == ["tenant-a", "tenant-b"]
    assert by_role.status_code == 200


@pytest.mark.parametrize(
    ("credentials", "message"),
    [
        (None, "credentials are required"),
        ("not-a-jwt", "invalid token"),
        (mint({"sub": "x", "exp": NOW - 3600}), "expired"),
        (mint({"sub": "x", "exp": None}), 'the "exp" claim'),
        (mint({"sub": "x", "iat": None}), 'the "iat" claim'),
        (mint({"sub": "x", "aud": None}), 'the "aud" claim'),
        (mint({"sub": "x", "iss": None}), 'the "iss" claim'),
        (mint({}), 'the "sub" claim'),
        (mint({"sub": "x", "aud": "another-service"}), "Audience"),
        (mint({"sub": "x", "iss": "https://elsewhere"}), "issuer"),
        (mint({"sub": "x"}, SECRET + "-other"), "Signature"),
        (mint({"sub": "x"}, SECRET * 2, algorithm="HS512"), "alg value"),
        (mint({"sub": "x"}, "", algorithm="none"), "alg value"),
        (mint({"sub": "x", "projects": "tenant-a"}), "projects"),
        # RFC 7519 NumericDate: a number, never a string (PyJWT alone takes "9999999999").
        (mint({"sub": "x", "exp": str(int(NOW) + 600)}), "exp must be a number"),
        (mint({"sub": "x", "iat": str(int(NOW))}), "iat must be a number"),
        (mint({"sub": "x", "nbf": str(int(NOW) - 60)}), "nbf must be a number"),
        (mint({"sub": "x", "exp": [int(NOW) + 600]}), "exp"),
        (mint({"sub": "x", "nbf": True}), "nbf must be a number"),
        ("x" * 9000, "too long"),
    ],
)
async def test_bad_credentials_are_a_401_saying_why(
    monitor: Monitor, credentials: str | None, message: str
) -> None:
    headers = bearer(credentials) if credentials is not None else {}
    async with client(monitor) as c:
        response = await c.get("/analytics/api/dashboard/tenant-a", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert message in response.json()["error"]["message"]
    assert MARK_A not in response.text


async def test_health_details_are_for_admins(monitor: Monitor) -> None:
    async with client(monitor) as c:
        tenant = await c.get(
            "/analytics/api/health",
            headers=bearer(token({"sub": "alice", "projects": ["tenant-a"]})),
        )
        admin = await c.get(
            "/analytics/api/health", headers=bearer(token({"sub": "ops", "admin": True}))
        )
    assert tenant.json() == {"status": "ok"}
    assert {"recorder", "storage", "cache"} <= set(admin.json())


async def test_loopback_needs_credentials_once_auth_is_configured(monitor: Monitor) -> None:
    """Behind a reverse proxy every visitor is loopback: it must not mean admin."""
    transport = httpx.ASGITransport(monitor.wrap(Starlette()), client=("127.0.0.1", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        response = await c.get("/analytics/api/overview")
    assert response.status_code == 401


def hs256_by_hand(claims: dict[str, Any], key: bytes) -> str:
    def part(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    head = part(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = part(json.dumps(claims).encode())
    signature = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{part(signature)}"


def ec_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def rsa_keys() -> tuple[Any, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


async def test_rs256_tokens_verify_with_the_public_key() -> None:
    private, public = rsa_keys()
    monitor = Monitor(
        storage=MemoryStorage(),
        jwt_public_key=public,
        jwt_audience=AUDIENCE,
        jwt_issuer=ISSUER,
        api_rate_limit=None,
    )
    wanted = {"sub": "a", "projects": ["p"]}
    # The classic confusion: the public key (which is public) used as an HMAC secret.
    forged = hs256_by_hand(claims(**wanted), public.encode())
    stranger, _ = rsa_keys()
    async with client(monitor) as c:
        ok = await c.get(
            "/analytics/api/dashboard/p", headers=bearer(token(wanted, private, "RS256"))
        )
        confused = await c.get("/analytics/api/dashboard/p", headers=bearer(forged))
        other_key = await c.get(
            "/analytics/api/dashboard/p", headers=bearer(token(wanted, stranger, "RS256"))
        )
        hs256 = await c.get("/analytics/api/dashboard/p", headers=bearer(token(wanted)))
    assert ok.status_code == 200
    for refused in (confused, other_key, hs256):
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_token"
    assert "Signature" in other_key.json()["error"]["message"]
    assert "alg value" in confused.json()["error"]["message"]


def test_jwt_settings_fail_at_start_up_naming_the_variable(tmp_path: Any) -> None:
    named: dict[str, Any] = {"jwt_audience": AUDIENCE, "jwt_issuer": ISSUER}
    with pytest.raises(ConfigError, match="ANALYTICS_JWT_SECRET='\\(hidden\\)'"):
        Settings(jwt_secret="short", **named)
    with pytest.raises(ConfigError, match="ANALYTICS_JWT_AUDIENCE"):
        Settings(jwt_secret=SECRET, jwt_issuer=ISSUER)
    with pytest.raises(ConfigError, match="ANALYTICS_JWT_ISSUER"):
        Settings(jwt_secret=SECRET, jwt_audience=AUDIENCE)
    _, public = rsa_keys()
    with pytest.raises(ConfigError, match="ANALYTICS_JWT_PUBLIC_KEY"):
        Settings(jwt_secret=SECRET, jwt_public_key=public, **named)
    with pytest.raises(ConfigError, match="ANALYTICS_JWT_ALGORITHM"):
        Settings(jwt_secret=SECRET, jwt_algorithm="RS256", **named)
    with pytest.raises(ConfigError, match="ANALYTICS_JWT_PUBLIC_KEY"):
        Settings.from_env({"ANALYTICS_JWT_PUBLIC_KEY": str(tmp_path / "missing.pem")})
    key_file = tmp_path / "key.pem"
    key_file.write_text(public)
    env = {
        "ANALYTICS_JWT_PUBLIC_KEY": str(key_file),
        "ANALYTICS_JWT_AUDIENCE": AUDIENCE,
        "ANALYTICS_JWT_ISSUER": ISSUER,
    }
    assert Settings.from_env(env).jwt_public_key == public.strip()
    ec = (
        ec_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    with pytest.raises(ConfigError, match="an RSA public key"):
        _ = Monitor(storage=MemoryStorage(), jwt_public_key=ec, **named).dashboard


# -- the host's hook ---------------------------------------------------------------------


async def test_a_host_hook_decides_the_principal() -> None:
    async def hook(request: Request) -> Principal | None:
        user = request.headers.get("x-user")
        return Principal(user, projects=frozenset({"tenant-a"})) if user else None

    storage = MemoryStorage()
    await tenant_data(storage)
    monitor = Monitor(storage=storage, auth=hook, api_rate_limit=None)
    async with client(monitor) as c:
        mine = await c.get("/analytics/api/errors/tenant-a", headers={"x-user": "alice"})
        theirs = await c.get("/analytics/api/errors/tenant-b", headers={"x-user": "alice"})
        nobody = await c.get("/analytics/api/errors/tenant-a")
    assert mine.status_code == 200
    assert mine.json()["totalErrors"] == 1
    assert (theirs.status_code, nobody.status_code) == (403, 401)


async def test_a_failing_hook_refuses_without_a_500() -> None:
    def hook(request: Request) -> Principal | None:
        raise RuntimeError("identity provider down")

    monitor = Monitor(storage=MemoryStorage(), auth=hook, api_rate_limit=None)
    async with client(monitor) as c:
        response = await c.get("/analytics/api/overview")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "auth_unavailable"


# -- the tenant matrix -------------------------------------------------------------------

INGEST_BODY = {
    "events": [
        {
            "kind": "deployment",
            "id": "",
            "projectId": "",
            "timestamp": datetime.now(UTC).isoformat(),
            "deploymentId": "cross",
            "type": "started",
        }
    ]
}


ALERT_IDS: dict[str, dict[str, str]] = {}
"""Per tenant, the id of one of its alert rules and of one of its silences."""


def alert_requests(route: Route, project: str) -> list[tuple[str, str, bytes | None]]:
    """The alert API's: ``{id}`` is the project for reads and collections, the alert for a
    change, a deletion or a test send."""
    assert route.methods is not None
    ids = ALERT_IDS[project]
    rule = f'{{"projectId": "{project}", "name": "x", "type": "error_count"}}'.encode()
    out: list[tuple[str, str, bytes | None]] = []
    for method in sorted(route.methods - {"HEAD"}):
        path = "/analytics" + route.path.replace("{silence}", ids["silence"])
        on_silence = route.path.endswith("{silence}")
        alert = ids["doomed"] if method == "DELETE" else ids["rule"]
        by_alert = (method in ("PATCH", "DELETE") and not on_silence) or path.endswith("/test")
        path = path.replace("{id}", alert if by_alert else project)
        if route.path.endswith("/silences") and method == "POST":
            until = datetime.fromtimestamp(time.time() + 3600, UTC).isoformat()
            body: bytes | None = json.dumps({"until": until}).encode()
        elif method == "PATCH":
            body = b'{"threshold": 3}'
        elif method == "POST" and not path.endswith("/test"):
            body = rule
        else:
            body = None
        out.append((method, path, body))
    return out


def requests_for(route: Route, project: str) -> list[tuple[str, str, bytes | None]]:
    """Every (method, path, body) a route answers, aimed at ``project`` where it takes one."""
    assert route.methods is not None
    if route.path.startswith("/api/alerts"):
        return alert_requests(route, project)
    params = set(route.param_convertors)
    assert params <= {"project_id", "fingerprint", "sentry_id"}, (
        f"{route.path}: the matrix does not know {params}"
    )
    path = "/analytics" + route.path.replace("{project_id}", project).replace(
        "{fingerprint:path}", GROUP
    )
    out: list[tuple[str, str, bytes | None]] = []
    if route.path in FORMS:
        # Forms refuse any post that is not this browser's form, whoever sends it.
        if "GET" in route.methods:  # the sign-in page itself: nobody's data
            return [("GET", path, None)]
        return [("POST", path, b"csrf_token=x&token=y")]
    if "sentry_id" in params:
        # Sentry's SDKs' paths: a DSN key opens them, a bearer token never does.
        return [("POST", path.replace("{sentry_id:int}", "1"), b"{}")]
    if route.path.endswith(("/resolve", "/unresolve", "/ignore")):
        return [("POST", path, b"{}")]
    if route.path.startswith("/api/admin/ratelimits/"):
        # The host's rate limit is nobody's project: its administration is for admins only.
        subject = f'{{"subject": "user:{project}", "rate": "1/minute"}}'.encode()
        return [
            (m, path + f"?subject=user:{project}", subject if m in ("PUT", "POST") else None)
            for m in sorted(route.methods - {"HEAD"})
        ]
    if route.methods == {"POST"} and by_query(route):
        # A page's form: refused without this browser's CSRF token, whoever sends it.
        return [("POST", path + f"?project={project}", b"csrf_token=x&action=resolve")]
    for method in sorted(route.methods - {"HEAD"}):
        if method == "GET" and by_query(route):
            query = f"?project={project}" + PAGE_PARAMS.get(route.path, "")
            out.append((method, path + query, None))
            out.append((method, path + query + "&range=90d", None))
        elif method == "GET":
            out.append((method, path, None))
            if "{project_id}" in route.path or route.path == "/api/overview":
                out.append((method, path + "?format=csv", None))
                out.append((method, path + "?range=90d", None))
        elif method == "POST":
            body = json.loads(json.dumps(INGEST_BODY))
            body["events"][0]["id"] = str(uuid.uuid4())
            body["events"][0]["projectId"] = project
            out.append((method, path, json.dumps(body).encode()))
        else:
            pytest.fail(f"the tenant matrix has no request for {method} {route.path}")
    return out


FORMS = frozenset({"/signin", "/signout"})
PAGE_FORMS = frozenset({"/errors/{fingerprint:path}", "/ratelimits/overrides", "/alerts"})
"""Forms of the pages: each refuses a post without this browser's CSRF token."""
PAGE_PARAMS = {"/performance/endpoint": "&method=GET&endpoint=/items"}


def by_query(route: Route) -> bool:
    """The pages and the live stream name their project in ``?project=``."""
    if route.path in FORMS:
        return False
    return not route.path.startswith("/api/") or route.path == "/api/stream"


async def test_no_tenant_reads_or_writes_another_on_any_route(monitor: Monitor) -> None:
    routes = [r for r in monitor.dashboard.routes if isinstance(r, Route)]
    # Besides routes, only the package's static files (the same for everyone).
    others = [r for r in monitor.dashboard.routes if not isinstance(r, Route)]
    assert [r.path for r in others if isinstance(r, Mount)] == ["/static"]
    assert len(others) == 1
    monitor.dashboard.stream.lifetime_s = 0.05
    assert monitor.alerts is not None
    for tenant in ("tenant-a", "tenant-b"):
        made = [
            await monitor.alerts.save(
                AlertRule(str(uuid.uuid4()), tenant, n, "error_count", 1, 300)
            )
            for n in ("mine", "doomed")
        ]
        silence = Record(SILENCE, str(uuid.uuid4()), tenant, {"until": time.time() + 600})
        await monitor.storage.put_alert_record(silence)
        ALERT_IDS[tenant] = {"silence": silence.id}
        for name, rule in zip(("rule", "doomed"), made, strict=True):
            assert rule is not None
            ALERT_IDS[tenant][name] = rule.id
    alice = bearer(token({"sub": "alice", "projects": ["tenant-a"]}))
    before = await monitor.storage.count("deployment", project_id="tenant-b")
    exercised = set()
    async with client(monitor) as c:
        for route in routes:
            for target in ("tenant-a", "tenant-b"):
                for method, path, body in requests_for(route, target):
                    exercised.add((method, route.path))
                    headers = {**alice, "content-type": "application/json"}
                    response = await c.request(method, path, headers=headers, content=body)
                    where = f"{method} {path}"
                    assert response.status_code < 500, where
                    assert MARK_B not in response.text, where
                    assert "tenant-b" not in response.text or response.status_code == 403, where
                    if target == "tenant-b" and "{project_id}" in route.path:
                        assert response.status_code == 403, where
                    if target == "tenant-b" and by_query(route) and method == "GET":
                        assert response.status_code in (403, 404), where
                    if route.path.startswith("/api/admin/"):
                        assert response.status_code == 403, where  # admins only
                        continue
                    if route.path.startswith("/api/alerts"):
                        if target == "tenant-a":
                            assert response.status_code in (200, 201, 204), where
                        elif any(ALERT_IDS[target][k] in path for k in ("rule", "doomed")):
                            assert response.status_code == 404, where  # as if there were none
                        else:
                            assert response.status_code == 403, where
                        continue
                    page_form = method == "POST" and route.path in PAGE_FORMS
                    if "{sentry_id:int}" in route.path:
                        assert response.status_code == 401, where
                        continue
                    if (
                        target == "tenant-b"
                        and method == "POST"
                        and route.path not in FORMS
                        and not page_form
                    ):
                        assert response.status_code == 403, where
                    if route.path in FORMS and method == "GET":
                        assert response.status_code == 200, where
                    elif route.path in FORMS or page_form:
                        assert response.status_code in (400, 403), where
                    elif target == "tenant-a" and (
                        "{project_id}" in route.path or body or by_query(route)
                    ):
                        assert response.status_code == 200, where
    assert await monitor.storage.count("deployment", project_id="tenant-b") == before
    assert await monitor.storage.error_groups("tenant-b") == []  # resolved in tenant-a only
    (mine,) = await monitor.storage.error_groups("tenant-a")
    assert mine.changed_by == "alice"
    # Every route and method of the app was aimed at both tenants.
    assert exercised == {(m, r.path) for r in routes for m in (r.methods or set()) if m != "HEAD"}
