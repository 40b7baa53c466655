"""One registry of event kinds: a new kind is one class and its registration.

The kind below is declared here and nowhere else; posted over HTTP it is validated, stored
(in a table of its own on SQLite), listed by the API and purged by its retention.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import httpx
import pytest
from starlette.applications import Starlette

from asgimon import Event, MemoryStorage, Monitor, Storage
from asgimon.dashboard.endpoints import ENDPOINTS
from asgimon.dashboard.openapi import openapi_document
from asgimon.events import EVENT_TYPES, register
from asgimon.fields import BIG_INT, INSTANT, spec, text
from asgimon.storage.sql import SQLStorage, tables

KEY = "key-for-every-project-01"


@dataclass(slots=True, kw_only=True)
class ScanEvent(Event):
    """A security scan of a deployment finished."""

    kind: ClassVar[str] = "scan"
    table: ClassVar[str] = "scan_events"
    retention: ClassVar[str] = "error_log_retention_days"
    ingest: ClassVar[bool] = True

    target: str = spec("", text(200), indexed=True, required=True)
    findings: int = spec(0, BIG_INT, required=True, high=10**6)
    finished_at: float | None = spec(None, INSTANT)


@pytest.fixture
def scans() -> Iterator[type[ScanEvent]]:
    register(ScanEvent)
    yield ScanEvent
    # Only this module knows the kind: the rest of the suite sees the built-in ones.
    del EVENT_TYPES["scan"]
    table = tables._tables.pop("scan", None)
    if table is not None:
        tables.metadata.remove(table)


@pytest.fixture(params=["memory", "sqlite"])
def storage(request: pytest.FixtureRequest, sqlite_url: str) -> Storage:
    return MemoryStorage() if request.param == "memory" else SQLStorage(sqlite_url)


def scan(at: datetime, **over: object) -> dict[str, object]:
    return {
        "kind": "scan",
        "id": str(uuid.uuid4()),
        "projectId": "a",
        "timestamp": at.isoformat(),
        "target": "dep-7",
        "findings": 3,
        "finishedAt": at.isoformat(),
        **over,
    }


async def test_a_registered_kind_is_ingested_stored_listed_and_purged(
    scans: type[ScanEvent], storage: Storage
) -> None:
    monitor = Monitor(storage=storage, flush_interval=0.01, ingest_keys=(("*", KEY),))
    app = monitor.wrap(Starlette())
    now = datetime.now(UTC)
    fresh, old = scan(now), scan(now - timedelta(days=20))
    async with monitor:
        transport = httpx.ASGITransport(app, client=("203.0.113.9", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://h") as c:
            auth = {"authorization": f"Bearer {KEY}"}
            posted = await c.post(
                "/analytics/api/events", json={"events": [fresh, old]}, headers=auth
            )
            assert posted.status_code == 200, posted.text
            assert posted.json() == {"accepted": 2, "duplicates": 0}
            bad = await c.post(
                "/analytics/api/events",
                json={
                    "events": [
                        scan(now, findings="many", colour="red"),
                        scan(now, target="x" * 201, findings=10**7),  # the specs' bounds
                    ]
                },
                headers=auth,
            )
        # An ingest key writes only; the API is read here from the loopback (an admin).
        local = httpx.ASGITransport(app, client=("127.0.0.1", 1))
        async with httpx.AsyncClient(transport=local, base_url="http://localhost") as c:
            listed = await c.get("/analytics/api/events/a?kind=scan&range=90d")
        assert bad.status_code == 422
        assert {(d["field"], d["message"]) for d in bad.json()["error"]["details"]} == {
            ("events[0].findings", "must be an integer"),
            ("events[0].colour", "is not a field of a scan event"),
            ("events[1].target", "must be at most 200 characters"),
            ("events[1].findings", "must be between 0 and 1e+06"),
        }
        assert listed.status_code == 200, listed.text
        events = listed.json()["events"]
        assert [(e["target"], e["findings"]) for e in events] == [("dep-7", 3), ("dep-7", 3)]
        assert events[0]["finishedAt"].startswith(now.isoformat()[:19])

        stored = await storage.events("scan", project_id="a")
        assert {ev.id for ev in stored} == {fresh["id"], old["id"]}
        assert all(isinstance(ev, ScanEvent) for ev in stored)
        # Its own retention setting: errors' 30 days, so the 20-day-old one stays, until the
        # setting is shorter.
        assert (await monitor.purge())["scan"] == 0
        monitor.settings = monitor.settings.replace(error_log_retention_days=10)
        assert (await monitor.purge())["scan"] == 1
        assert [ev.id for ev in await storage.events("scan")] == [fresh["id"]]


def test_the_openapi_document_describes_a_registered_kind(scans: type[ScanEvent]) -> None:
    doc = openapi_document(ENDPOINTS)
    schema = doc["components"]["schemas"]["ScanEvent"]
    assert schema["required"] == ["kind", "id", "projectId", "timestamp", "target", "findings"]
    assert schema["properties"]["finishedAt"] == {"type": "string", "format": "date-time"}
    assert schema["properties"]["findings"] == {"type": "integer"}


def test_a_kind_is_registered_once() -> None:
    @dataclass(slots=True, kw_only=True)
    class Impostor(Event):
        kind: ClassVar[str] = "deployment"
        table: ClassVar[str] = "impostors"

    with pytest.raises(ValueError, match="'deployment' is DeploymentEvent's already"):
        register(Impostor)

    @dataclass(slots=True, kw_only=True)
    class Tableless(Event):
        kind: ClassVar[str] = "tableless"

    with pytest.raises(ValueError, match="names no table"):
        register(Tableless)

    @dataclass(slots=True, kw_only=True)
    class Unbounded(Event):
        kind: ClassVar[str] = "unbounded"
        table: ClassVar[str] = "unbounded"
        size: int = spec(0, BIG_INT)

    # Said at import, not as a 500 when the first event is checked.
    with pytest.raises(ValueError, match=r"size: a number says its highest value"):
        register(Unbounded)
