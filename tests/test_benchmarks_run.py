"""The benchmark scripts keep running (no timing is asserted: figures come from benchmarks/)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_overhead_benchmark_runs_and_balances_its_ledger(tmp_path: Path) -> None:
    out = tmp_path / "overhead.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/overhead.py", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.exists()
    assert "asgimon-memory" in done.stdout


@pytest.mark.slow
def test_the_query_benchmark_runs_at_a_tiny_size_and_prints_its_table(tmp_path: Path) -> None:
    db = tmp_path / "query.db"
    out = tmp_path / "query.json"
    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/query.py",
            "--api-calls",
            "2000",
            "--domain-events",
            "500",
            "--backends",
            "sqlite",
            "--requests",
            "3",
            "--sqlite-path",
            str(db),
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| endpoint | backend | cold median ms | cold p95 ms | warm median ms" in done.stdout
    for name in ("dashboard", "overview", "events (api_call)", "performance CSV"):
        assert f"| {name} | sqlite |" in done.stdout
    result = json.loads(out.read_text())
    assert [ld["inserted"] for ld in result["loads"]] == [2500]
    assert len(result["rows"]) == 9
    assert all(r["requests"] == 3 for r in result["rows"])
    assert not db.exists()  # without --reuse the store is deleted at the end


@pytest.mark.slow
def test_the_http_benchmark_serves_each_quick_variant_and_reads_asgimons_health(
    tmp_path: Path,
) -> None:
    out = tmp_path / "http.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/http_load.py", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    rows = {r["variant"]: r for r in result["rows"]}
    assert set(rows) == {"bare", "asgimon-memory", "asgimon-sqlite"}
    assert all(r["rps_median"] > 0 for r in rows.values())
    for run in result["runs"]:
        if not run["variant"].startswith("asgimon"):
            continue
        assert run["recorder"]["written"] > 0, run
        assert run["recorder"]["droppedTotal"] == 0, run
        assert run["eventLoop"]["samples"] > 0, run
        assert run["after_shutdown"]["pending"] == 0, run
    assert "| asgimon-sqlite |" in done.stdout


@pytest.mark.slow
def test_the_error_capture_benchmark_runs_beside_sentry(tmp_path: Path) -> None:
    out = tmp_path / "capture.md"
    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/error_capture.py",
            "--rounds",
            "1",
            "--captures",
            "20",
            "--md",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    table = out.read_text()
    for depth in (5, 40):
        assert f"| {depth} | asgimon, unhandled in a request |" in table
        assert (
            f"| {depth} | Sentry SDK, capture_exception (local variables, its default) |" in table
        )


@pytest.mark.slow
def test_the_rate_limit_benchmark_runs_beside_slowapi() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/ratelimit.py", "--rounds", "1", "--batch", "50"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| asgimon, memory, fixed window |" in done.stdout
    assert "| slowapi, memory, SlowAPIASGIMiddleware |" in done.stdout
