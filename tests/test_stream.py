"""``GET {mount}/api/stream``: live figures from storage, shared, bounded, never in the way
of a shutdown. Over a real uvicorn."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from asgimon import DeploymentEvent, MemoryStorage, Monitor

from .browser_server import Served, serve


@pytest.fixture
def served() -> Iterator[Served]:
    now = time.time()
    started = DeploymentEvent(
        project_id="shop", timestamp=now - 60, deployment_id="d1", type="started"
    )
    with serve([started]) as s:
        yield s


def events(
    served: Served, seconds: float, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """The ``figures`` events one client reads in ``seconds``, each with its id."""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    with httpx.stream(
        "GET", served.mount + "/api/stream?project=shop", headers=headers, timeout=10
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        event: dict[str, Any] = {}
        for line in r.iter_lines():
            if line.startswith("id: "):
                event["id"] = int(line[4:])
            elif line.startswith("data: "):
                event["data"] = json.loads(line[6:])
            elif line == "" and "data" in event:
                out.append(event)
                event = {}
            if time.monotonic() > deadline:
                break
    return out


def test_the_stream_reports_traffic_and_deployments_from_storage(served: Served) -> None:
    with httpx.Client(base_url=served.base_url) as client:
        for _ in range(120):
            client.get("/work")
    time.sleep(0.5)  # the recorder's flush interval is 0.2 s here
    got = events(served, 1.5)
    figures = got[-1]["data"]
    assert figures["projectId"] == "shop"
    # 120 calls in the last minute: 2 a second (whatever part of a minute has passed; calls
    # made in the previous minute's bucket count for the part of it the window still covers).
    assert figures["requestsPerSecond"] == pytest.approx(2.0, abs=0.05)
    assert figures["deploymentsInProgress"] == 1
    assert figures["errorsLastMinute"] == 0
    assert figures["inFlight"] >= 0
    ids = [e["id"] for e in got]
    assert ids == sorted(set(ids)), ids


def test_many_clients_share_one_read_a_second(served: Served) -> None:
    stream = served.monitor.dashboard.stream
    stream.max_per_caller = 20  # every client here is the same loopback caller
    before = stream.reads
    threads = [threading.Thread(target=events, args=(served, 3.0)) for _ in range(12)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    # At most one read of storage per second (plus the first), not one per client per second.
    assert stream.reads - before <= elapsed + 2, (stream.reads - before, elapsed)


def test_a_reconnecting_client_resumes_after_its_last_event(served: Served) -> None:
    first = events(served, 1.2)
    last = first[-1]["id"]
    again = events(served, 1.2, headers={"Last-Event-ID": str(last)})
    assert again
    assert all(e["id"] > last for e in again)


def test_open_streams_are_bounded(served: Served) -> None:
    stream = served.monitor.dashboard.stream
    stream.max_streams = 2
    opened = threading.Barrier(3)

    def hold() -> None:
        with httpx.stream("GET", served.mount + "/api/stream?project=shop", timeout=10) as r:
            lines = r.iter_lines()  # kept: a dropped iterator closes the response
            next(lines)
            opened.wait(timeout=5)
            time.sleep(0.5)

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for t in holders:
        t.start()
    opened.wait(timeout=5)
    assert stream.open == 2, stream.open
    refused = httpx.get(served.mount + "/api/stream?project=shop", timeout=5)
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "5"
    assert refused.json()["error"]["code"] == "too_many_streams"
    for t in holders:
        t.join()


def test_a_project_the_caller_may_not_name_is_refused(served: Served) -> None:
    bad = httpx.get(served.mount + "/api/stream?project=", timeout=5)
    assert bad.status_code == 422
    assert bad.json()["error"]["details"][0]["field"] == "project"


def test_open_streams_do_not_hold_the_server_at_shutdown() -> None:
    with serve([]) as s:
        readers = [threading.Thread(target=events, args=(s, 30.0)) for _ in range(3)]
        for t in readers:
            t.start()
        time.sleep(1.0)
        assert s.monitor.dashboard.stream.open == 3
        t0 = time.monotonic()
        s.server.handle_exit(signal.SIGINT, None)  # what Ctrl-C does
        for t in readers:
            t.join(timeout=10)
        # The streams ended at once, not at the end of their 15 s lifetime.
        assert time.monotonic() - t0 < 3.0
        assert all(not t.is_alive() for t in readers)


async def test_streams_asked_for_at_once_are_counted_before_any_is_served() -> None:
    """The bound holds for requests that arrive together, and per caller."""
    monitor = Monitor(storage=MemoryStorage())
    stream = monitor.dashboard.stream
    stream.lifetime_s = 0.5
    stream.max_streams, stream.max_per_caller = 100, 4
    app = monitor.wrap(Starlette())
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        answers = await asyncio.gather(
            *(client.get("/analytics/api/stream?project=shop") for _ in range(20))
        )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 4 + [503] * 16
    assert stream.open == 0  # every place given back
    assert stream.by_caller == {}
