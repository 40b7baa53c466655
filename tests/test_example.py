"""The FastAPI example, started as a newcomer starts it (``python -m examples.fastapi_app``,
what ``make demo`` runs): real requests with an API key, its log stream and its websocket
read, and what its own code recorded found on the API and the dashboard's pages."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parent.parent
PHASES = ["clone", "install", "build", "optimize", "upload"]
# Dana's: the example's synthetic traffic signs in as the other demo accounts only, so
# whatever is recorded under her name was done by these tests.
DANA = {"X-API-Key": "demo-key-dana"}
ALICE = {"X-API-Key": "demo-key-alice"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Example:
    base: str
    banner: list[str]
    api: httpx.Client  # the platform's API
    analytics: httpx.Client  # asgimon's, at the mount

    def wait_for(self, path: str, done: Callable[[Any], bool], what: str, **params: Any) -> Any:
        """``path``'s JSON once ``done`` says it holds what was asked for."""
        body: Any = None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            r = self.analytics.get(path, params=params)
            assert r.status_code == 200, r.text
            body = r.json()
            if done(body):
                return body
            time.sleep(0.3)
        pytest.fail(f"{what} never showed on {path}: {json.dumps(body)[:3000]}")

    def events(self, kind: str, match: Callable[[dict[str, Any]], bool], what: str) -> Any:
        """The newest events of ``kind`` that ``match``, once there is one."""
        found = self.wait_for(
            "/api/events/default",
            lambda body: any(match(e) for e in body["events"]),
            what,
            kind=kind,
            limit=1000,
        )
        return [e for e in found["events"] if match(e)]


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Example]:
    tmp = tmp_path_factory.mktemp("fastapi-example")
    port = free_port()
    env = {
        **os.environ,
        "ANALYTICS_STORAGE_URL": f"sqlite:///{tmp / 'asgimon.db'}",
        # Every request kept raw, so that each of the tests' own is found in the listing.
        "ANALYTICS_API_CALL_SAMPLE_RATE": "1",
    }
    database = f"sqlite+aiosqlite:///{tmp / 'platform.db'}"
    # Stopped with Ctrl-C below; the duration only bounds it should this process die first.
    command = ["-m", "examples.fastapi_app", "--port", str(port), "--duration", "120"]
    command += ["--database", database]
    proc = subprocess.Popen(
        [sys.executable, *command],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        # Read the banner line by line here: communicate() would miss what readline buffered.
        # Its fifth line, into a fresh store, comes once the week of history is written.
        banner = [proc.stdout.readline().decode() for _ in range(5)]
        base = f"http://127.0.0.1:{port}"
        with (
            httpx.Client(base_url=base, timeout=10) as api,
            httpx.Client(base_url=base + "/analytics", timeout=10) as analytics,
        ):
            yield Example(base, banner, api, analytics)
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C, as a person stops `make demo`
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            pytest.fail("the example did not stop within 30 s of Ctrl-C:\n" + out.decode()[-3000:])
    assert proc.returncode == 0, out.decode()[-3000:]
    assert "Traceback" not in out.decode(), out.decode()[-3000:]


@pytest.mark.slow
def test_the_banner_opens_with_the_dashboard_then_the_api_docs(example: Example) -> None:
    address = re.search(r"http://\S+", example.banner[0])
    assert address is not None, example.banner
    assert address.group() == f"{example.base}/analytics/", example.banner  # the dashboard first
    assert f"{example.base}/docs" in example.banner[1]
    assert "a week of made-up history" in example.banner[4]
    docs = example.api.get("/openapi.json").json()
    assert "demo-key-alice" in docs["info"]["description"]  # how to try it, on its docs page
    assert docs["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"


@pytest.mark.slow
def test_requests_need_a_key_and_are_recorded_under_their_route_and_user(
    example: Example,
) -> None:
    api = example.api
    assert api.get("/projects").status_code == 401
    assert api.get("/projects", headers={"X-API-Key": "nope"}).status_code == 401
    created = api.post("/projects", headers=DANA, json={"id": "dana-site", "framework": "vite"})
    assert created.status_code == 201, created.text
    assert api.get("/projects/dana-site", headers=DANA).json()["framework"] == "vite"
    assert api.get("/projects/dana-site/deployments", headers=DANA).json() == []
    assert api.get("/projects/acme-web", headers=DANA).status_code == 404  # Alice's

    expected = {
        ("POST", "/projects", 201),
        ("GET", "/projects/{project_id}", 200),
        ("GET", "/projects/{project_id}", 404),
        ("GET", "/projects/{project_id}/deployments", 200),
    }

    def danas(body: Any) -> set[tuple[str, str, int]]:
        return {
            (e["method"], e["endpoint"], e["status"])
            for e in body["events"]
            if e["userId"] == "dana"
        }

    example.wait_for(
        "/api/events/default",
        lambda body: expected <= danas(body),
        "Dana's requests",
        kind="api_call",
        limit=1000,
    )
    # Templates, never the raw paths; the demo accounts' requests come from the traffic.
    performance = example.analytics.get("/api/performance/default").json()
    endpoints = {(e["method"], e["endpoint"]) for e in performance["endpoints"]}
    assert ("GET", "/projects/{project_id}") in endpoints
    assert not [e for e in endpoints if "acme-" in e[1] or "dana-" in e[1]]
    example.wait_for(
        "/api/events/default",
        lambda body: {"alice", "bob", "carol"} <= {e["userId"] for e in body["events"]},
        "the traffic's users",
        kind="api_call",
        limit=1000,
    )


@pytest.mark.slow
def test_listing_projects_is_the_n_plus_one_the_performance_page_flags(example: Example) -> None:
    # The request's id (recorded with its statements) tells this listing from the traffic's.
    listing = {**ALICE, "X-Request-ID": "test-n-plus-one"}
    projects = example.api.get("/projects", headers=listing).json()
    assert len(projects) == 8
    assert all(p["recent_deployments"] for p in projects)

    ran = example.events(
        "db_query",
        lambda e: e["requestId"] == "test-n-plus-one" and e["metric"] == "time",
        "the listing's statements",
    )
    by_table = {e["statement"].split(" FROM ")[1].split()[0]: e for e in ran}
    assert {t: (e["calls"], e["nPlusOne"]) for t, e in by_table.items()} == {
        "users": (1, False),  # the key's lookup
        "projects": (1, False),
        "deployments": (8, True),  # one per project
    }
    repeated = by_table["deployments"]
    assert (repeated["method"], repeated["endpoint"]) == ("GET", "/projects")
    assert "WHERE deployments.project_id = ?" in repeated["statement"]
    assert repeated["database"].endswith("platform.db")

    # The same statement serves a project's own deployment list, where it runs once.
    def in_the_listing(queries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        key = (repeated["statementHash"], "/projects")
        return [q for q in queries if (q["statementHash"], q["endpoint"]) == key]

    performance = example.wait_for(
        "/api/performance/default", lambda body: bool(in_the_listing(body["queries"])), "the N+1"
    )
    [figures] = in_the_listing(performance["queries"])
    assert figures["nPlusOneRequests"] >= 1
    assert figures["calls"] > figures["requests"]
    page = example.analytics.get(
        "/performance/endpoint", params={"method": "GET", "endpoint": "/projects"}
    )
    assert page.status_code == 200
    assert "WHERE deployments.project_id = ?" in page.text


@pytest.mark.slow
def test_a_deployment_is_built_in_the_background_and_followed_live(example: Example) -> None:
    api = example.api
    project = {"id": "dana-blog", "framework": "nextjs"}
    assert api.post("/projects", headers=DANA, json=project).status_code == 201
    followed = api.post("/projects/dana-blog/deployments", headers=DANA)
    assert followed.status_code == 202, followed.text
    assert followed.json()["status"] == "queued"
    first = followed.json()["id"]
    with api.stream("GET", f"/deployments/{first}/logs", headers=DANA) as stream:
        assert stream.headers["content-type"].startswith("text/plain")
        lines = list(stream.iter_lines())
    assert lines[0] == "queued for dana-blog"
    assert lines[-1] in ("ready", "failed")
    ran = list(dict.fromkeys(line.split(":")[0] for line in lines[1:-1]))
    assert ran == PHASES[: len(ran)]
    assert api.get(f"/deployments/{first}", headers=DANA).json()["status"] == lines[-1]
    # Once it is over, the stored log is what the stream gives.
    assert api.get(f"/deployments/{first}/logs", headers=DANA).text.splitlines()[-1] == lines[-1]

    second = api.post("/projects/dana-blog/deployments", headers=DANA).json()["id"]
    url = example.base.replace("http:", "ws:") + f"/ws/deployments/{second}"
    with connect(url, additional_headers=DANA, open_timeout=10) as ws:
        told = [json.loads(message) for message in ws]  # until the server closes it
    assert told[0]["status"] == "queued"
    assert told[-1]["status"] in ("ready", "failed")
    assert {m["deployment_id"] for m in told} == {second}
    with pytest.raises(InvalidStatus) as refused, connect(url, open_timeout=10):
        pass
    assert refused.value.response.status_code == 403  # no key: refused before it opens

    # What the build recorded, from the background task.
    def completed(body: Any) -> bool:
        done = {d["deploymentId"] for d in body["deployments"] if d["type"] == "completed"}
        return {first, second} <= done

    deployments = example.wait_for("/api/deployments/default", completed, "the deployments")
    types = {d["type"] for d in deployments["deployments"] if d["deploymentId"] == first}
    assert types == {"started", "in_progress", "completed"}
    [done] = [
        d
        for d in deployments["deployments"]
        if d["deploymentId"] == first and d["type"] == "completed"
    ]
    assert (done["status"], done["framework"]) == (
        "success" if lines[-1] == "ready" else "failure",
        "nextjs",
    )
    builds = example.wait_for(
        "/api/builds/default",
        lambda body: any(b["deploymentId"] == first for b in body["builds"]),
        "the build",
    )
    [build] = [b for b in builds["builds"] if b["deploymentId"] == first]
    assert [p["phase"] for p in build["phases"]] == ran
    assert {p["status"] for p in build["phases"][:-1]} <= {"success"}
    calls = example.events(
        "api_call", lambda e: e["userId"] == "dana" and e["method"] == "WS", "the websocket"
    )
    assert {(e["endpoint"], e["status"]) for e in calls} == {
        ("/ws/deployments/{deployment_id}", 101)
    }
    page = example.analytics.get("/deployments")
    assert page.status_code == 200
    assert first in page.text


@pytest.mark.slow
def test_functions_are_timed_and_their_failures_reported(example: Example) -> None:
    api = example.api

    def invocations(body: Any) -> dict[str, int]:
        return {f["functionId"]: f["invocations"] for f in body["functions"]}

    before = invocations(example.analytics.get("/api/functions/default").json())
    ok = api.post("/functions/thumbnail/invoke", headers=DANA, json={"size": 64})
    assert ok.json() == {"function": "thumbnail", "result": {"size": 64}}
    # A size no traffic asks for, so that this failure is told from the others.
    too_big = api.post(
        "/functions/resize/invoke", headers=DANA, json={"width": 77_777, "height": 7_777}
    )
    assert too_big.status_code == 502
    assert api.post("/functions/nope/invoke", headers=DANA).status_code == 404

    [failed] = example.events(
        "function", lambda e: "77777x7777" in (e["errorMessage"] or ""), "the failed invocation"
    )
    assert (failed["functionId"], failed["status"], failed["errorType"]) == (
        "resize",
        "error",
        "FunctionError",
    )
    # Reported once, by the invocation's tracker: not again for the 502 it became.
    [report] = example.events(
        "error", lambda e: "77777x7777" in e["message"], "the invocation's error"
    )
    assert (report["errorType"], report["endpoint"], report["userId"]) == (
        "examples.fastapi_app.routers.functions.FunctionError",
        "/functions/{function_id}/invoke",
        "dana",
    )
    example.wait_for(
        "/api/functions/default",
        lambda body: invocations(body)["thumbnail"] > before["thumbnail"],
        "the invocations, counted",
    )
    assert example.analytics.get("/functions").status_code == 200


@pytest.mark.slow
def test_the_dashboard_pages_show_the_example(example: Example) -> None:
    # The traffic's first round follows a deployment's log: the routes are soon all there.
    routes = {
        ("GET", "/projects"),
        ("GET", "/projects/{project_id}/deployments"),
        ("POST", "/projects/{project_id}/deployments"),
        ("GET", "/deployments/{deployment_id}/logs"),
        ("POST", "/functions/{function_id}/invoke"),
        ("POST", "/checkout"),
    }
    example.wait_for(
        "/api/performance/default",
        lambda body: routes <= {(e["method"], e["endpoint"]) for e in body["endpoints"]},
        "the example's routes",
    )
    overview = example.analytics.get("/")
    assert overview.status_code == 200
    assert "<h1>Overview" in overview.text
    assert "Nothing recorded" not in overview.text  # not the empty state
    performance = example.analytics.get("/performance")
    assert performance.status_code == 200
    for _, template in routes:
        assert template in performance.text
    for path in ("/builds", "/errors", "/ratelimits"):
        assert example.analytics.get(path).status_code == 200, path
    health = example.analytics.get("/api/health").json()
    assert health["recorder"]["internalErrors"] == 0
