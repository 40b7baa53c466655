"""Sentry's own SDKs as clients: the real ``sentry-sdk`` reports into asgimon's groups, scrubbed
and with its release; bad envelopes are refused whole and store nothing."""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from asgimon import ErrorEvent, MemoryStorage, Monitor

from .browser_server import serve

KEY = "a3f1c2d4e5b6a7980112233445566778"
SECRETS = {
    "query": "qs-Sentry-Secret-51",
    "header": "hdr-Sentry-Secret-52",
    "cookie": "ck-Sentry-Secret-53",
    "body": "bd-Sentry-Secret-54",
    "message": "msg-Sentry-Secret-55",
    "extra": "ex-Sentry-Secret-56",
}

SCRIPT = textwrap.dedent(
    """
    import sys

    import sentry_sdk

    SECRETS = {secrets!r}

    # The SDK's own scrubbing off, so that asgimon's is what is tested (version 3 has no
    # event scrubber: it filters only what its integrations collect).
    scrubbing = {{}}
    if int(sentry_sdk.VERSION.split(".")[0]) < 3:
        from sentry_sdk.scrubber import EventScrubber

        scrubbing["event_scrubber"] = EventScrubber(denylist=[], pii_denylist=[])


    def before_send(event, hint):
        # What a browser SDK sends of its page: asgimon must scrub it, not the SDK.
        event["request"] = {{
            "url": "http://shop.example/checkout?token=" + SECRETS["query"] + "&page=2",
            "method": "POST",
            "headers": {{"Authorization": "Bearer " + SECRETS["header"], "User-Agent": "t"}},
            "cookies": {{"session": SECRETS["cookie"]}},
            "data": {{"password": SECRETS["body"], "item": "book"}},
        }}
        return event


    sentry_sdk.init(
        dsn=sys.argv[1],
        release="shop@1.4.2",
        environment="test",
        before_send=before_send,
        **scrubbing,
    )
    sentry_sdk.set_extra("client_secret", SECRETS["extra"])
    sentry_sdk.set_user({{"id": "u-42"}})


    def charge(order_id):
        raise ValueError(f"card declined for order {{order_id}}: api_key={{SECRETS['message']}}")


    for order in (1, 2):
        try:
            charge(order)
        except ValueError as exc:
            sentry_sdk.capture_exception(exc)
    sentry_sdk.flush(5)


    def worker():
        raise LookupError("the queue item vanished")


    worker()
    """
)


def run_sdk(dsn: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "shop_worker.py"
    script.write_text(SCRIPT.format(secrets=SECRETS))
    return subprocess.run(
        [sys.executable, str(script), dsn],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def wait_for(storage: MemoryStorage, n: int) -> list[ErrorEvent]:
    for _ in range(100):
        found = [e for e in await storage.events("error", limit=100) if isinstance(e, ErrorEvent)]
        if len(found) >= n:
            return sorted(found, key=lambda e: e.timestamp)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{n} errors did not arrive")


def test_the_real_sentry_sdk_reports_into_groups_scrubbed_with_its_release(
    tmp_path: Path,
) -> None:
    with serve([], sentry_keys=(("shop", KEY),)) as served:
        dsn = f"http://{KEY}@{served.base_url.removeprefix('http://')}/analytics/1"
        done = run_sdk(dsn, tmp_path)
        assert done.returncode == 1, done.stderr  # the unhandled error ended the worker
        assert "the queue item vanished" in done.stderr
        storage = served.monitor.storage
        assert isinstance(storage, MemoryStorage)
        time.sleep(0.5)  # the lifecycle follows the writes
    found = asyncio.run(wait_for(storage, 3))
    first, second, unhandled = found
    assert (first.error_type, second.error_type, unhandled.error_type) == (
        "ValueError",
        "ValueError",
        "LookupError",
    )
    assert first.fingerprint == second.fingerprint != unhandled.fingerprint
    assert {e.project_id for e in found} == {"shop"}
    assert {e.deployment_id for e in found} == {"shop@1.4.2"}
    assert (first.handled, unhandled.handled) == (True, False)
    assert first.message == "card declined for order 1: api_key=[Filtered]"
    assert first.user_id == "u-42"
    chain = json.loads(first.exception or "[]")
    assert chain[0]["frames"][-1]["function"] == "charge"
    assert chain[0]["frames"][-1]["inApp"] is True
    request = first.context["request"]
    assert request["headers"]["authorization"] == "[Filtered]"
    assert request["query"] == {"token": "[Filtered]", "page": "2"}
    assert request["cookies"] == ["session"]
    assert first.context["request_data"] == {"password": "[Filtered]", "item": "book"}
    assert first.context["environment"] == "test"
    groups = asyncio.run(storage.error_groups("shop"))
    assert sorted(g.count for g in groups) == [1, 2]
    assert {g.first_release for g in groups} == {"shop@1.4.2"}
    stored = repr(asyncio.run(storage.events("error", limit=100))) + repr(groups)
    assert [name for name, s in SECRETS.items() if s in stored] == []


@pytest.fixture
async def ingest() -> Any:
    storage = MemoryStorage()
    monitor = Monitor(
        storage=storage, sentry_keys=(("shop", KEY),), ingest_max_bytes=4096, api_rate_limit=None
    )
    transport = httpx.ASGITransport(app=monitor.wrap(Starlette()), client=("203.0.113.9", 4000))
    async with monitor, httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield storage, client


def envelope(*items: tuple[dict[str, Any], bytes], header: dict[str, Any] | None = None) -> bytes:
    lines = [json.dumps(header or {"event_id": uuid.uuid4().hex}).encode()]
    for item_header, payload in items:
        lines += [json.dumps(item_header).encode(), payload]
    return b"\n".join(lines) + b"\n"


def event(**fields: Any) -> bytes:
    body = {
        "event_id": uuid.uuid4().hex,
        "level": "error",
        "exception": {"values": [{"type": "TypeError", "value": "x is undefined"}]},
        **fields,
    }
    return json.dumps(body).encode()


AUTH = {"X-Sentry-Auth": f"Sentry sentry_version=7, sentry_key={KEY}, sentry_client=t/1"}


async def test_an_envelope_with_length_and_a_store_body_are_stored(ingest: Any) -> None:
    storage, client = ingest
    payload = event(release="web@9", transaction="/checkout")
    body = envelope(
        ({"type": "event", "length": len(payload)}, payload),
        ({"type": "transaction"}, b'{"type": "transaction"}'),
        ({"type": "client_report"}, b"{}"),
    )
    r = await client.post(
        "/analytics/api/1/envelope/",
        content=gzip.compress(body),
        headers={**AUTH, "Content-Encoding": "gzip"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == "*"
    r = await client.post(
        f"/analytics/api/1/store/?sentry_key={KEY}",
        content=event(message="ignored: the exception names it", level="warning"),
    )
    assert r.status_code == 200
    found = await storage.events("error")
    assert sorted((e.severity, e.endpoint, e.deployment_id) for e in found) == [
        ("high", "/checkout", "web@9"),
        ("medium", None, None),
    ]
    assert len({e.fingerprint for e in found}) == 1  # one bug, whichever way it came


@pytest.mark.parametrize(
    ("body", "headers", "status", "field"),
    [
        (b"not json\n", {}, 400, "envelope header"),
        (envelope(({"type": "event", "length": 999}, b"{}")), {}, 400, "items[0].length"),
        (envelope(({"type": "event"}, b"[1, 2]")), {}, 400, "items[0] payload"),
        (envelope(({"type": "event"}, b'{"level": "error"}')), {}, 400, "exception"),
        (
            envelope(({"type": "event"}, event(timestamp="yesterday"))),
            {},
            400,
            "timestamp",
        ),
        (
            envelope(({"type": "event"}, event(timestamp=time.time() - 400 * 86_400))),
            {},
            400,
            "timestamp",
        ),
        (b"\x1f\x8b not really gzip", {"Content-Encoding": "gzip"}, 400, "Content-Encoding"),
        (b"{}", {"Content-Encoding": "zstd"}, 400, "Content-Encoding"),
        (b"x" * 5000, {}, 413, "body"),
        (gzip.compress(b"{}" + b" " * 100_000), {"Content-Encoding": "gzip"}, 413, "body"),
    ],
)
async def test_a_bad_envelope_is_refused_whole_and_stores_nothing(
    ingest: Any, body: bytes, headers: dict[str, str], status: int, field: str
) -> None:
    storage, client = ingest
    r = await client.post("/analytics/api/1/envelope/", content=body, headers={**AUTH, **headers})
    assert r.status_code == status, r.text
    assert r.json()["error"]["details"][0]["field"] == field
    # A good event beside a bad one: refused with it, never stored half.
    mixed = envelope(({"type": "event"}, event()), ({"type": "event"}, b'{"level": "error"}'))
    r = await client.post("/analytics/api/1/envelope/", content=mixed, headers=AUTH)
    assert r.status_code == 400
    assert await storage.events("error") == []


async def test_only_a_known_dsn_key_opens_the_sentry_paths_and_nothing_else(ingest: Any) -> None:
    storage, client = ingest
    body = envelope(({"type": "event"}, event()))
    for headers in ({}, {"X-Sentry-Auth": "Sentry sentry_key=" + "0" * 32}):
        r = await client.post("/analytics/api/1/envelope/", content=body, headers=headers)
        assert r.status_code == 401
    # The key opens ingestion of Sentry events, not the project's analytics.
    r = await client.get("/analytics/api/errors/shop", headers=AUTH)
    assert r.status_code == 404
    r = await client.get(f"/analytics/api/errors/shop?sentry_key={KEY}")
    assert r.status_code == 404
    assert await storage.events("error") == []


async def test_odd_shapes_are_a_400_and_list_tags_are_scrubbed(ingest: Any) -> None:
    storage, client = ingest
    # A timestamp no float holds is refused; malformed parts of a usable event are left out.
    for odd, status in (
        (event(timestamp=10**400), 400),
        (event(request={"headers": [1, 2, 3], "query_string": [5]}), 200),
        (event(exception={"values": [{"type": "E", "stacktrace": {"frames": [7, None]}}]}), 200),
    ):
        r = await client.post(
            "/analytics/api/1/envelope/", content=envelope(({"type": "event"}, odd)), headers=AUTH
        )
        assert r.status_code == status, r.text
    listed = event(tags=[["session_token", "TAG-SECRET-4242"], ["env", "prod"]])
    r = await client.post(
        "/analytics/api/1/envelope/", content=envelope(({"type": "event"}, listed)), headers=AUTH
    )
    assert r.status_code == 200
    stored = repr(await storage.events("error", limit=100))
    assert "TAG-SECRET-4242" not in stored
    assert "prod" in stored


@pytest.mark.parametrize(
    "raw",
    [
        f"*={KEY}",
        f"shop={KEY},blog={KEY}",
        "shop=short",
    ],
)
def test_a_bad_dsn_key_setting_fails_at_start_up_naming_it(raw: str) -> None:
    from asgimon import ConfigError, Settings

    with pytest.raises(ConfigError, match="ERROR_SENTRY_KEYS"):
        Settings.from_env({"ERROR_SENTRY_KEYS": raw})
