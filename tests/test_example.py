"""``make demo`` serves the example app with recorded data (the command it runs, for real)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.slow
def test_the_demo_serves_a_populated_summary(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "ANALYTICS_STORAGE_URL": f"sqlite:///{tmp_path / 'demo.db'}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "examples.fastapi_app", "--port", str(port), "--duration", "20"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        summary: dict[str, Any] = {}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/analytics/api/summary", timeout=2)
            except httpx.TransportError:
                continue
            summary = r.json()
            projects = summary["projects"]
            if (
                projects
                and projects[0]["deployments"]["count"]
                and projects[0]["api"]["count"] > 50
            ):
                break
        else:
            pytest.fail(f"the demo never showed data: {summary}")
        [project] = summary["projects"]
        endpoints = {e["endpoint"] for e in project["endpoints"]}
        assert "/projects/{project_id}/items/{item_id}" in endpoints
        assert project["builds"]["count"] > 0
        assert project["functions"]["count"] > 0
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C, as a person stops `make demo`
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out.decode()
    assert b"/analytics/api/summary" in out
