"""POST /analytics/api/events: strict, idempotent, written through, closed to strangers."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from asgimon import MemoryStorage, Monitor, Storage, StorageUnavailable

KEY_A = "key-for-project-a-0001"
KEY_ALL = "key-for-every-project-01"
NOW = datetime.now(UTC)


def iso(dt: datetime) -> str:
    return dt.isoformat()


def deployment(**over: Any) -> dict[str, Any]:
    event = {
        "kind": "deployment",
        "id": str(uuid.uuid4()),
        "projectId": "a",
        "timestamp": iso(NOW),
        "deploymentId": "dep-1",
        "type": "completed",
        "status": "success",
        "durationMs": 1234.5,
        "framework": "nextjs",
    }
    event.update(over)
    return event


def one_of_each() -> list[dict[str, Any]]:
    return [
        deployment(),
        {
            "kind": "build",
            "id": str(uuid.uuid4()),
            "projectId": "a",
            "timestamp": iso(NOW),
            "deploymentId": "dep-1",
            "phase": "install",
            "startTime": iso(NOW - timedelta(seconds=30)),
            "endTime": iso(NOW),
            "status": "success",
            "framework": "nextjs",
            "assetCount": 12,
            "totalSizeBytes": 1_000_000,
        },
        {
            "kind": "function",
            "id": str(uuid.uuid4()),
            "projectId": "a",
            "timestamp": iso(NOW),
            "functionId": "resize",
            "deploymentId": "dep-1",
            "status": "error",
            "durationMs": 15,
            "coldStart": True,
            "memoryMb": 128,
            "error": {"type": "TimeoutError", "message": "too slow"},
        },
        {
            "kind": "domain",
            "id": str(uuid.uuid4()),
            "projectId": "a",
            "timestamp": iso(NOW),
            "domain": "shop.example.com",
            "type": "ssl_issued",
            "expiresAt": iso(NOW + timedelta(days=90)),
        },
    ]


@pytest.fixture
async def monitor() -> AsyncIterator[Monitor]:
    mon = Monitor(
        storage=MemoryStorage(),
        ingest_keys=(("a", KEY_A), ("*", KEY_ALL)),
        ingest_max_events=50,
        ingest_max_bytes=64 * 1024,
    )
    async with mon:
        yield mon


def client(monitor: Monitor, host: str = "203.0.113.9") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(monitor.wrap(Starlette()), client=(host, 5555))
    return httpx.AsyncClient(transport=transport, base_url="http://asgimon.example")


async def post(
    monitor: Monitor, body: Any, key: str | None = KEY_A, host: str = "203.0.113.9"
) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with client(monitor, host) as c:
        return await c.post("/analytics/api/events", content=content, headers=headers)


async def stored(storage: Storage) -> int:
    kinds = ("deployment", "build", "function", "domain")
    return sum([await storage.count(k) for k in kinds])


async def test_a_batch_is_stored_and_a_retry_reports_duplicates(monitor: Monitor) -> None:
    batch = {"events": one_of_each()}
    first = await post(monitor, batch)
    assert first.status_code == 200
    assert first.json() == {"accepted": 4, "duplicates": 0}
    again = await post(monitor, batch)
    assert again.json() == {"accepted": 0, "duplicates": 4}
    assert await stored(monitor.storage) == 4
    [fn] = await monitor.storage.events("function")
    assert (fn.error_type, fn.error_message, fn.cold_start) == ("TimeoutError", "too slow", True)  # type: ignore[attr-defined]
    [build] = await monitor.storage.events("build")
    assert build.duration_ms == pytest.approx(30_000)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"durationMs": "slow"}, "events[1].durationMs"),
        ({"durationMs": -1}, "events[1].durationMs"),
        ({"durationMs": 1e400}, "events[1].durationMs"),  # read as infinity
        ({"type": "finished"}, "events[1].type"),
        ({"status": None}, "events[1].status"),
        ({"deploymentId": ""}, "events[1].deploymentId"),
        ({"deploymentId": "x\u0000y"}, "events[1].deploymentId"),
        ({"id": "not-a-uuid"}, "events[1].id"),
        ({"timestamp": "yesterday"}, "events[1].timestamp"),
        ({"timestamp": "2026-11-27T10:00:00"}, "events[1].timestamp"),
        ({"timestamp": iso(NOW + timedelta(days=1))}, "events[1].timestamp"),
        ({"timestamp": iso(NOW - timedelta(days=400))}, "events[1].timestamp"),
        ({"framework": 7}, "events[1].framework"),
        ({"colour": "red"}, "events[1].colour"),
        ({"kind": "invoice"}, "events[1].kind"),
        ({"projectId": "p" * 200}, "events[1].projectId"),
    ],
)
async def test_one_bad_field_refuses_the_whole_batch_and_names_the_field(
    monitor: Monitor, change: dict[str, Any], field: str
) -> None:
    batch = [deployment(), deployment(**change), deployment()]
    raw = json.dumps({"events": batch}).replace("Infinity", "1e400").encode()
    response = await post(monitor, raw)
    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    assert field in [d["field"] for d in details], details
    assert await stored(monitor.storage) == 0


async def test_every_bad_event_is_reported_at_once(monitor: Monitor) -> None:
    batch = [deployment(durationMs="x"), deployment(), deployment(status="maybe", framework=1)]
    response = await post(monitor, {"events": batch})
    fields = sorted(d["field"] for d in response.json()["error"]["details"])
    assert fields == ["events[0].durationMs", "events[2].framework", "events[2].status"]


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"", 400),
        (b"{", 400),
        (b"\xff\xfe", 400),
        (b"NaN", 400),
        (b"[]", 422),
        (b'{"events": {}}', 422),
        (b'{"events": [], "more": 1}', 422),
        (b'{"events": [], "events": []}', 400),
        (b'{"events": [1, "x", null]}', 422),
        (b"[" * 100_000, 413),
    ],
)
async def test_malformed_bodies_get_a_clear_error(
    monitor: Monitor, raw: bytes, status: int
) -> None:
    response = await post(monitor, raw)
    assert response.status_code == status
    assert "code" in response.json()["error"]


async def test_batches_past_the_limits_are_413(monitor: Monitor) -> None:
    many = await post(monitor, {"events": [deployment() for _ in range(51)]})
    assert many.status_code == 413
    assert many.json()["error"]["code"] == "too_many_events"
    big = await post(monitor, {"events": [deployment(framework="x" * 70_000)]})
    assert big.status_code == 413
    assert big.json()["error"]["code"] == "body_too_large"
    assert await stored(monitor.storage) == 0


async def test_keys_decide_who_may_write_what(monitor: Monitor) -> None:
    stranger = await post(monitor, {"events": [deployment()]}, key=None)
    assert stranger.status_code == 404
    wrong = await post(monitor, {"events": [deployment()]}, key="not-a-configured-key-123")
    assert wrong.status_code == 401
    other_project = await post(monitor, {"events": [deployment(), deployment(projectId="b")]})
    assert other_project.status_code == 403
    assert other_project.json()["error"]["details"] == [
        {"field": "events[1].projectId", "message": "this key may not write to that project"}
    ]
    assert await stored(monitor.storage) == 0
    admin = await post(monitor, {"events": [deployment(projectId="b")]}, key=KEY_ALL)
    assert admin.json() == {"accepted": 1, "duplicates": 0}
    local = await post(monitor, {"events": [deployment()]}, key=None, host="127.0.0.1")
    assert local.status_code == 404  # Host is not a loopback name: the default client sends one
    assert await stored(monitor.storage) == 1


async def test_the_other_endpoints_stay_closed_to_a_key_holder(monitor: Monitor) -> None:
    async with client(monitor) as c:
        response = await c.get(
            "/analytics/api/summary", headers={"authorization": f"Bearer {KEY_A}"}
        )
    assert response.status_code == 404


class DownStorage(MemoryStorage):
    async def write(self, events: Any, **options: Any) -> Any:
        raise StorageUnavailable("connection refused")


async def test_a_store_that_is_down_answers_503_so_the_client_retries() -> None:
    monitor = Monitor(storage=DownStorage(), ingest_keys=(("a", KEY_A),))
    response = await post(monitor, {"events": [deployment()]})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "storage_unavailable"


def test_ingest_keys_are_read_from_the_environment() -> None:
    from asgimon import ConfigError, Settings

    s = Settings.from_env({"ANALYTICS_INGEST_KEYS": f"a={KEY_A}, *={KEY_ALL}"})
    assert s.ingest_keys == (("a", KEY_A), ("*", KEY_ALL))
    with pytest.raises(ConfigError, match="ANALYTICS_INGEST_KEYS"):
        Settings.from_env({"ANALYTICS_INGEST_KEYS": "a=short"})
    with pytest.raises(ConfigError, match="ANALYTICS_INGEST_KEYS"):
        Settings.from_env({"ANALYTICS_INGEST_KEYS": "no-equals-sign"})


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "kind",
        "id",
        "projectId",
        "timestamp",
        "deploymentId",
        "type",
        "status",
        "durationMs",
        "framework",
        "phase",
        "startTime",
        "endTime",
        "functionId",
        "coldStart",
        "memoryMb",
        "error",
        "domain",
        "expiresAt",
        "assetCount",
        "totalSizeBytes",
    ]
) | st.text(max_size=12)


def mutated(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(field_names, json_values, max_size=6).map(
        lambda extra: {**base, **extra}
    )


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=st.lists(st.one_of([mutated(e) for e in one_of_each()]), min_size=1, max_size=5))
async def test_any_batch_is_stored_whole_or_refused_cleanly(batch: list[dict[str, Any]]) -> None:
    monitor = Monitor(storage=MemoryStorage(), ingest_keys=(("*", KEY_ALL),))
    response = await post(monitor, {"events": batch}, key=KEY_ALL)
    assert response.status_code in (200, 422), response.text
    body = response.json()
    if response.status_code == 200:
        assert body["accepted"] + body["duplicates"] == len(batch)
        assert await stored(monitor.storage) == body["accepted"]
    else:
        assert body["error"]["details"]
        assert all(d["field"].startswith("events[") for d in body["error"]["details"])
        assert await stored(monitor.storage) == 0


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_a_body_not_sent_as_json_is_a_415_and_stores_nothing(
    monitor: Monitor, content_type: str | None
) -> None:
    """A cross-site page can send text/plain or a form without a CORS preflight; not JSON."""
    headers = {"authorization": f"Bearer {KEY_A}"}
    if content_type:
        headers["content-type"] = content_type
    async with client(monitor) as c:
        response = await c.post(
            "/analytics/api/events",
            content=json.dumps({"events": [deployment()]}).encode(),
            headers=headers,
        )
    assert response.status_code == 415
    assert response.json()["error"]["details"][0]["field"] == "Content-Type"
    assert await stored(monitor.storage) == 0


@pytest.mark.parametrize(
    "extra",
    [
        {"sec-fetch-site": "cross-site"},
        {"origin": "https://evil.example"},
        {"origin": "null"},
    ],
)
async def test_a_browser_page_from_another_site_is_not_local(
    monitor: Monitor, extra: dict[str, str]
) -> None:
    """Loopback and Host are what a page in a local browser sends too (CSRF)."""
    headers = {"content-type": "application/json", **extra}
    async with client(monitor, host="127.0.0.1") as c:
        response = await c.post(
            "http://localhost/analytics/api/events",
            content=json.dumps({"events": [deployment()]}).encode(),
            headers=headers,
        )
        same_site = await c.get(
            "http://localhost/analytics/api/health", headers={"origin": "http://localhost"}
        )
    assert response.status_code == 404
    assert same_site.status_code == 200
    assert await stored(monitor.storage) == 0
