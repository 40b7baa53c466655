"""``make demo`` serves the example app with recorded data (the command it runs, for real)."""

from __future__ import annotations

import os
import re
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
def test_the_demo_opens_onto_a_populated_dashboard(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "ANALYTICS_STORAGE_URL": f"sqlite:///{tmp_path / 'demo.db'}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "examples.fastapi_app", "--port", str(port), "--duration", "30"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        # Read the banner line by line here: communicate() would miss what readline buffered.
        banner = [proc.stdout.readline().decode() for _ in range(4)]
        first = banner[0]
        # The first address printed is the dashboard's.
        address = re.search(r"http://\S+", first)
        assert address is not None, first
        assert address.group() == f"http://127.0.0.1:{port}/analytics/", first
        summary: dict[str, Any] = {}
        counts: list[int] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/analytics/api/summary", timeout=2)
            except httpx.TransportError:
                continue
            summary = r.json()
            mine = [p for p in summary["projects"] if p["projectId"] == "default"]
            if mine and mine[0]["deployments"]["count"]:
                counts.append(mine[0]["api"]["count"])
            if len(counts) >= 2 and counts[-1] > counts[0] + 50:
                break  # history is there and live traffic keeps adding to it
        else:
            pytest.fail(f"the demo never showed moving data: {counts} {summary}")
        project = next(p for p in summary["projects"] if p["projectId"] == "default")
        endpoints = {e["endpoint"] for e in project["endpoints"]}
        assert "/projects/{project_id}/items/{item_id}" in endpoints
        assert project["builds"]["count"] > 0
        assert project["functions"]["count"] > 0
        assert project["errors"]["count"] > 0
        page = httpx.get(address.group(), timeout=10)
        assert page.status_code == 200
        assert "<h1>Overview" in page.text
        assert "Nothing recorded" not in page.text  # not the empty state
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C, as a person stops `make demo`
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            pytest.fail("the demo did not stop within 30 s of Ctrl-C:\n" + out.decode()[-3000:])
    assert proc.returncode == 0, out.decode()
    assert "/analytics/api/summary" in "".join(banner)
