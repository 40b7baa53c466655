"""The edge against hostile and careless input: each class of bad request, several members
of each, answered with the documented status and a JSON error naming the field, and
nothing of it stored."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message

from asgimon import ConfigError, DeploymentEvent, MemoryStorage, Monitor

from . import uvicorn_proc
from .asgi import http_scope, run

NOW = datetime.now(UTC)
KINDS = ("deployment", "build", "function", "domain", "api_call", "error")


@pytest.fixture
async def monitor() -> AsyncIterator[Monitor]:
    """No auth configured: loopback clients without proxy headers are admins."""
    mon = Monitor(storage=MemoryStorage(), api_rate_limit=None)
    async with mon:
        yield mon


def local(monitor: Monitor) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(monitor.wrap(Starlette()), client=("127.0.0.1", 5000))
    return httpx.AsyncClient(transport=transport, base_url="http://localhost")


async def nothing_stored(monitor: Monitor) -> None:
    assert [await monitor.storage.count(k) for k in KINDS] == [0] * len(KINDS)
    assert await monitor.storage.projects() == []


def fields(response: httpx.Response) -> list[str]:
    return [d["field"] for d in response.json()["error"]["details"]]


def deployment(**over: Any) -> dict[str, Any]:
    return {
        "kind": "deployment",
        "id": str(uuid.uuid4()),
        "projectId": "shop",
        "timestamp": NOW.isoformat(),
        "deploymentId": "dep-1",
        "type": "completed",
        "status": "success",
        "durationMs": 1200,
        "framework": "nextjs",
        **over,
    }


def function(**over: Any) -> dict[str, Any]:
    return {
        "kind": "function",
        "id": str(uuid.uuid4()),
        "projectId": "shop",
        "timestamp": NOW.isoformat(),
        "functionId": "resize",
        "status": "success",
        "durationMs": 12,
        **over,
    }


async def ingest(
    c: httpx.AsyncClient, events: list[dict[str, Any]], **headers: str
) -> httpx.Response:
    return await c.post(
        "/analytics/api/events",
        content=json.dumps({"events": events}),
        headers={"content-type": "application/json", **headers},
    )


# -- numbers too long to convert ----------------------------------------------------------


@pytest.mark.parametrize(
    "limit",
    ["9" * 5000, "1" * 40, "0" * 4000 + "5", "5001", "0", "-1", "1e3", "10.0", "٣", "", " 5"],
)
async def test_a_numeric_parameter_out_of_its_bounds_is_a_422_naming_it(
    monitor: Monitor, limit: str
) -> None:
    async with local(monitor) as c:
        response = await c.get(
            "/analytics/api/events/shop", params={"kind": "deployment", "limit": limit}
        )
    assert response.status_code == 422
    assert fields(response) == ["limit"]


@pytest.mark.parametrize("length", ["9" * 5000, "1" * 19, "99999999"])
async def test_a_content_length_of_any_size_is_answered_without_converting_it(
    monitor: Monitor, length: str
) -> None:
    async with local(monitor) as c:
        request = c.build_request(
            "POST",
            "/analytics/api/events",
            content=b'{"events": []}',
            headers={"content-type": "application/json"},
        )
        request.headers["content-length"] = length
        response = await c.send(request)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"
    await nothing_stored(monitor)


# -- identifiers: what ingestion takes, the read side can read ----------------------------

BAD_IDS = [
    "../etc",
    "a/b",
    "a\\b",
    "..",
    ".",
    "line\nbreak",
    "tab\there",
    "nul\x00",
    "bidi\u202eevil",
    "zero\u200bwidth",
    " padded",
    "padded ",
    "bell\x07",
    "x" * 129,
    "",
]


@pytest.mark.parametrize("bad", BAD_IDS)
async def test_a_project_id_the_read_side_refuses_is_not_stored(monitor: Monitor, bad: str) -> None:
    async with local(monitor) as c:
        response = await ingest(c, [deployment(projectId=bad)])
    assert response.status_code == 422
    assert fields(response) == ["events[0].projectId"]
    await nothing_stored(monitor)


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (deployment(deploymentId="../../x"), "deploymentId"),
        (deployment(deploymentId="dep\n2"), "deploymentId"),
        (deployment(deploymentId="dep\u202e1"), "deploymentId"),
        (deployment(framework="next\x1bjs"), "framework"),
        (function(functionId="a/b"), "functionId"),
        (function(functionId="fn\u2066x"), "functionId"),
        (function(deploymentId=" dep"), "deploymentId"),
        (
            {
                **deployment(),
                "kind": "domain",
                "domain": "shop.example/../x",
                "type": "added",
                "deploymentId": None,
                "status": None,
                "durationMs": None,
                "framework": None,
            },
            "domain",
        ),
    ],
)
async def test_every_identifier_field_is_checked_alike(
    monitor: Monitor, event: dict[str, Any], field: str
) -> None:
    event = {k: v for k, v in event.items() if v is not None}
    async with local(monitor) as c:
        # One good event beside it: the batch is refused whole.
        response = await ingest(c, [deployment(), event])
    assert response.status_code == 422
    assert fields(response) == [f"events[1].{field}"]
    await nothing_stored(monitor)


@pytest.mark.parametrize("bad", BAD_IDS[:-1])  # "" is no path segment
async def test_the_read_side_refuses_the_same_project_ids(monitor: Monitor, bad: str) -> None:
    # Every character escaped, dots too: clients resolve a bare ".." in a path.
    segment = quote(bad, safe="").replace(".", "%2E")
    async with local(monitor) as c:
        response = await c.get("/analytics/api/dashboard/" + segment)
    if "/" in bad:
        # A decoded slash is another path, which is no route.
        assert response.status_code == 404
    else:
        assert response.status_code == 422
        assert fields(response) == ["projectId"]


async def test_identifiers_that_are_fine_are_stored_and_read_back(monitor: Monitor) -> None:
    names = ["shop", "Shop Front", "api.v2", "größe", "店", "a:b", "x" * 128]
    async with local(monitor) as c:
        response = await ingest(c, [deployment(projectId=n) for n in names])
        assert response.status_code == 200, response.text
        for name in names:
            read = await c.get(f"/analytics/api/deployments/{name}")
            assert read.status_code == 200
            assert read.json()["totalDeployments"] == 1
    assert sorted(await monitor.storage.projects()) == sorted(names)


def test_record_and_settings_refuse_the_same_identifiers(monitor: Monitor) -> None:
    for bad in ("../etc", "a\u202eb", "x\n"):
        with pytest.raises(ValueError, match="project_id"):
            monitor.record(DeploymentEvent(project_id=bad, deployment_id="d", timestamp=1e9))
        with pytest.raises(ConfigError, match="ANALYTICS_PROJECT_ID"):
            Monitor(storage=MemoryStorage(), project_id=bad)


# -- control characters in parsed fields --------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"timestamp": NOW.isoformat().replace("+", "\x00+")}, "timestamp"),
        ({"timestamp": NOW.isoformat() + "\x00"}, "timestamp"),
        ({"timestamp": NOW.isoformat() + "\n"}, "timestamp"),
        ({"timestamp": NOW.isoformat().replace("T", "\u2028")}, "timestamp"),
        ({"id": " " + str(uuid.uuid4())}, "id"),
        ({"id": "{" + str(uuid.uuid4()) + "}"}, "id"),
        ({"id": str(uuid.uuid4()) + "\n"}, "id"),
        ({"id": "urn:uuid:" + str(uuid.uuid4())}, "id"),
        ({"id": uuid.uuid4().hex}, "id"),
        ({"type": "completed\x00"}, "type"),
        ({"status": "success\n"}, "status"),
        ({"kind": "deployment\x00"}, "kind"),
    ],
)
async def test_control_characters_in_parsed_fields_are_a_422(
    monitor: Monitor, change: dict[str, Any], field: str
) -> None:
    async with local(monitor) as c:
        response = await ingest(c, [deployment(**change)])
    assert response.status_code == 422
    assert fields(response) == [f"events[0].{field}"]
    await nothing_stored(monitor)


@pytest.mark.parametrize(
    "start", ["2026-01-01T00:00:00\x00+00:00", "2026-01-01T00:00:00+00:00\x00", "2026-01-01\n"]
)
async def test_the_read_side_parses_timestamps_as_strictly(monitor: Monitor, start: str) -> None:
    async with local(monitor) as c:
        response = await c.get(
            "/analytics/api/dashboard/shop",
            params={"start": start, "end": "2026-01-02T00:00:00+00:00"},
        )
    assert response.status_code == 422
    assert fields(response) == ["start"]


async def test_an_upper_case_uuid_is_one_event_however_it_is_spelled(monitor: Monitor) -> None:
    event_id = str(uuid.uuid4())
    async with local(monitor) as c:
        first = await ingest(c, [deployment(id=event_id.upper())])
        again = await ingest(c, [deployment(id=event_id)])
    assert first.json() == {"accepted": 1, "duplicates": 0}
    assert again.json() == {"accepted": 0, "duplicates": 1}


# -- content encodings --------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["br", "gzip", "deflate", "zstd", "compress", "x-custom"])
async def test_a_content_encoding_that_is_not_decoded_is_a_415(
    monitor: Monitor, encoding: str
) -> None:
    async with local(monitor) as c:
        response = await ingest(c, [deployment()], **{"content-encoding": encoding})
    assert response.status_code == 415
    assert fields(response) == ["Content-Encoding"]
    await nothing_stored(monitor)


async def test_identity_encoding_is_plain(monitor: Monitor) -> None:
    async with local(monitor) as c:
        response = await ingest(c, [deployment()], **{"content-encoding": "identity"})
    assert response.status_code == 200


# -- the loopback guard and proxies -------------------------------------------------------

PROXY_HEADERS = [
    ("Forwarded", "for=203.0.113.9"),
    ("Via", "1.1 proxy"),
    ("X-Forwarded-For", "203.0.113.9"),
    ("X-Forwarded-Server", "edge"),
    ("X-Forwarded-Scheme", "https"),
    ("X-Forwarded-Ssl", "on"),
    ("X-Forwarded-Anything-New", "1"),
    ("X-Original-Forwarded-For", "203.0.113.9"),
    ("X-Real-IP", "203.0.113.9"),
    ("X-Client-IP", "203.0.113.9"),
    ("Client-IP", "203.0.113.9"),
    ("X-Cluster-Client-IP", "203.0.113.9"),
    ("Fastly-Client-IP", "203.0.113.9"),
    ("CF-Connecting-IP", "203.0.113.9"),
    ("True-Client-IP", "203.0.113.9"),
    ("X-Envoy-External-Address", "203.0.113.9"),
    ("X-Vercel-Forwarded-For", "203.0.113.9"),
]


@pytest.mark.parametrize(("name", "value"), PROXY_HEADERS)
async def test_a_proxied_request_is_refused_on_every_endpoint(
    monitor: Monitor, name: str, value: str
) -> None:
    async with local(monitor) as c:
        stored = await ingest(c, [deployment()], **{name: value})
        read = await c.get("/analytics/api/dashboard/shop", headers={name: value})
        health = await c.get("/analytics/api/health", headers={name: value})
    assert [stored.status_code, read.status_code, health.status_code] == [404, 404, 404]
    await nothing_stored(monitor)


async def test_two_host_headers_are_a_400(monitor: Monitor) -> None:
    hosts = [
        [("host", "evil.example"), ("host", "localhost")],
        [("host", "localhost"), ("host", "localhost")],
        [("host", "localhost"), ("host", "127.0.0.1:8000")],
    ]
    app = monitor.wrap(Starlette())
    for pair in hosts:
        for method, path in (("POST", "/analytics/api/events"), ("GET", "/analytics/api/health")):
            status, body = await raw_request(
                app,
                method,
                path,
                [*pair, ("content-type", "application/json")],
                [{"type": "http.request", "body": json.dumps({"events": [deployment()]}).encode()}],
            )
            assert status == 400, pair
            assert json.loads(body)["error"]["details"][0]["field"] == "Host"
    await nothing_stored(monitor)


async def raw_request(
    app: ASGIApp, method: str, path: str, headers: list[tuple[str, str]], body: list[Message]
) -> tuple[int, bytes]:
    """One request straight to the ASGI app: clients like httpx merge repeated headers."""
    scope = http_scope(path, method, [(k.encode(), v.encode()) for k, v in headers])
    sent = await run(app, scope, [*body, {"type": "http.disconnect"}])
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


# -- a client that goes away --------------------------------------------------------------


async def test_a_body_cut_short_is_counted_and_logged_in_one_line(
    monitor: Monitor, caplog: pytest.LogCaptureFixture
) -> None:
    app = monitor.wrap(Starlette())
    cut_short: list[Message] = [
        {"type": "http.request", "body": b'{"events": [', "more_body": True},
        {"type": "http.disconnect"},
    ]
    headers = [("host", "localhost"), ("content-type", "application/json")]
    headers.append(("content-length", "500"))
    with caplog.at_level(logging.DEBUG, logger="asgimon"):
        await raw_request(app, "POST", "/analytics/api/events", headers, cut_short)
    ours = [r for r in caplog.records if r.name.startswith("asgimon")]
    assert [(r.levelno, r.exc_info) for r in ours] == [(logging.INFO, None)]
    assert "went away" in ours[0].getMessage()
    async with local(monitor) as c:
        health = (await c.get("/analytics/api/health")).json()
    assert health["ingest"] == {"clientDisconnects": 1}
    await nothing_stored(monitor)


async def test_a_real_server_logs_no_traceback_for_a_short_body(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'a.db'}"
    log = tmp_path / "server.log"
    async with uvicorn_proc.uvicorn_server(
        "tests.apps.worker_app:create_app", url, log, workers=1
    ) as server:
        port = int(server.base_url.rsplit(":", 1)[1])
        for _ in range(3):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST /analytics/api/events HTTP/1.1\r\nHost: localhost\r\n"
                b"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
                b'{"events": [{"kind": '
            )
            await writer.drain()
            await asyncio.sleep(0.1)
            writer.close()
            await writer.wait_closed()
        async with httpx.AsyncClient(base_url=server.base_url) as c:
            for _ in range(50):
                health = (await c.get("/analytics/api/health")).json()
                if health["ingest"]["clientDisconnects"] == 3:
                    break
                await asyncio.sleep(0.1)
            events = await c.get("/analytics/api/events/default", params={"kind": "deployment"})
    assert health["ingest"] == {"clientDisconnects": 3}
    assert events.json()["events"] == []
    assert "Traceback" not in server.output()
    assert "ClientDisconnect" not in server.output()
