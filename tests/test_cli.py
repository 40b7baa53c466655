"""The ``asgimon`` command: help, exit statuses and messages, the export, the demo."""

from __future__ import annotations

import asyncio
import csv
import io
import json
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

from asgimon import ApiCall, ErrorEvent, Event, Monitor, Storage
from asgimon._commands import export as export_command
from asgimon.storage.sql import SQLStorage

from .test_example import free_port
from .test_operations import asgimon_cli

HOUR = 3600.0
# Whole hours, so that the API (which widens a range to whole hours) and the export (which
# does not) read the same events.
START = (time.time() - 3 * 86_400) // HOUR * HOUR
END = START + 2 * HOUR
ISO_START = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(START))
ISO_END = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(END))
COMMANDS = ["check", "db", "purge", "forget", "export", "demo"]


def fill(url: str, events: list[Event]) -> None:
    async def write() -> None:
        storage = SQLStorage(url)
        await storage.start()
        await storage.write(events)
        await storage.close()

    asyncio.run(write())


def sample() -> list[Event]:
    """Two projects' API calls and errors in the range, and some outside it."""
    events: list[Event] = []
    for i in range(30):
        for project in ("shop", "docs"):
            events.append(
                ApiCall(
                    project_id=project,
                    timestamp=START + 60 * i + 0.25,
                    endpoint="/items/{id}",
                    status=500 if i % 7 == 0 else 200,
                    duration_ms=1.5 * i,
                    total_ms=1.5 * i,
                    user_id="alice" if i % 2 else None,
                )
            )
    events.append(ApiCall(project_id="shop", timestamp=START - 1, duration_ms=1, total_ms=1))
    events.append(ApiCall(project_id="shop", timestamp=END, duration_ms=1, total_ms=1))
    for i in range(5):
        events.append(
            ErrorEvent(
                project_id="shop",
                timestamp=START + 600 * i + 1,
                error_type="ValueError",
                message="=HYPERLINK(1)" if i == 0 else f"bad value, {i}\nsecond line",
                fingerprint=f"f{i % 2}",
                context={"order": i, "tags": ["a", "b"]},
            )
        )
    return events


# -- help and exit statuses -----------------------------------------------------------------


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_command_has_help(command: str | None) -> None:
    done = asgimon_cli(*([command] if command else []), "--help", env={})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: asgimon{' ' + command if command else ''} ")
    assert done.stderr == ""
    if command is None:
        for name in COMMANDS:
            assert f"    {name} " in done.stdout


def test_the_version_is_the_installed_one() -> None:
    done = asgimon_cli("--version", env={})
    assert done.returncode == 0
    assert re.fullmatch(r"asgimon \d+\.\d+\.\d+\S*\n", done.stdout), done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "the following arguments are required: COMMAND"),
        (("nope",), "argument COMMAND: invalid choice: 'nope'"),
        (("db",), "the following arguments are required: action"),
        (("db", "drop"), "argument action: invalid choice: 'drop'"),
        (("forget",), "the following arguments are required: --user"),
        (("export", "--range", "1h"), "the following arguments are required: --kind"),
        (("export", "--kind", "api_call"), "one of the arguments --range --start is required"),
        (("export", "--kind", "calls", "--range", "1h"), "argument --kind: invalid choice"),
        (("export", "--kind", "error", "--range", "2h"), "argument --range: invalid choice"),
        (
            ("export", "--kind", "error", "--range", "1h", "--start", ISO_START),
            "argument --start: not allowed with argument --range",
        ),
        (
            ("export", "--kind", "error", "--range", "1h", "--end", ISO_END),
            "argument --end: not allowed with --range",
        ),
        (
            ("export", "--kind", "error", "--start", "yesterday", "--end", ISO_END),
            "argument --start: 'yesterday' must be an ISO 8601 timestamp with a UTC offset",
        ),
        (
            ("export", "--kind", "error", "--start", "2026-01-01T10:00", "--end", ISO_END),
            "argument --start: '2026-01-01T10:00' must carry a UTC offset",
        ),
        (("export", "--kind", "error", "--start", ISO_START), "argument --end: required with"),
        (
            ("export", "--kind", "error", "--start", ISO_END, "--end", ISO_START),
            "argument --end: must be after --start",
        ),
        (
            ("export", "--kind", "error", "--range", "1h", "--format", "xml"),
            "argument --format: invalid choice: 'xml'",
        ),
        (
            ("export", "--kind", "error", "--range", "1h", "--project", " shop"),
            "argument --project: ' shop' must not start or end with whitespace",
        ),
        (("demo", "--port", "65536"), "argument --port: '65536' is not a port from 0 to 65535"),
        (("demo", "--port", "-1"), "argument --port: '-1' is not a port"),
        (("demo", "--duration", "0"), "argument --duration: '0' is not a number of seconds"),
        (("demo", "--duration", "inf"), "argument --duration: 'inf' is not a number"),
        (("demo", "--host"), "argument --host: expected one argument"),
    ],
)
def test_a_bad_argument_exits_2_naming_it(
    args: tuple[str, ...], message: str, tmp_path: Path
) -> None:
    db = tmp_path / "never.db"
    done = asgimon_cli(*args, env={"ANALYTICS_STORAGE_URL": f"sqlite:///{db}"})
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "usage: asgimon" in done.stderr
    assert done.stdout == ""
    assert not db.exists()  # refused before any storage was touched


def test_a_bad_demo_port_setting_exits_2_naming_it() -> None:
    done = asgimon_cli("demo", env={"DEMO_PORT": "eighty"})
    assert done.returncode == 2
    assert (
        done.stderr == "asgimon: DEMO_PORT='eighty' is invalid: expected a port from 0 to 65535\n"
    )


@pytest.mark.parametrize(
    "args",
    [
        ("check",),
        ("db", "upgrade"),
        ("db", "compact"),
        ("purge",),
        ("forget", "--user", "alice"),
        ("export", "--kind", "api_call", "--range", "24h"),
        ("demo", "--port", "0", "--duration", "5"),
    ],
)
def test_storage_down_exits_1_with_one_line(args: tuple[str, ...]) -> None:
    # A PostgreSQL server that is not there. (A SQLite file that cannot be opened would do
    # as well, but aiosqlite's worker thread at times reports it once more at exit.)
    url = f"postgresql://asgimon@127.0.0.1:{free_port()}/asgimon"
    done = asgimon_cli(*args, env={"ANALYTICS_STORAGE_URL": url})
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("asgimon: ")
    assert done.stderr.endswith("\n")
    assert done.stderr.count("\n") == 1, done.stderr
    assert "Connect call failed" in done.stderr
    if args[0] == "check":
        assert json.loads(done.stdout)["storage"]["startError"]  # the health, as always
    else:
        assert done.stdout == ""


def test_a_port_in_use_stops_the_demo_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"ANALYTICS_STORAGE_URL": f"sqlite:///{tmp_path / 'demo.db'}"}
        done = asgimon_cli("demo", "--port", str(port), "--duration", "5", env=env)
    assert done.returncode == 1
    assert done.stderr == f"asgimon: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    assert done.stdout == ""


def test_an_unwritable_output_exits_1_naming_the_file(sqlite_url: str, tmp_path: Path) -> None:
    fill(sqlite_url, sample())
    target = tmp_path / "missing" / "out.csv"
    done = asgimon_cli(
        *("export", "--kind", "api_call", "--range", "7d", "--output", str(target)),
        env={"ANALYTICS_STORAGE_URL": sqlite_url},
    )
    assert done.returncode == 1
    assert done.stderr == f"asgimon: [Errno 2] No such file or directory: '{target}'\n"


# -- export ----------------------------------------------------------------------------------


async def api_export(url: str, project: str, kind: str, fmt: str) -> httpx.Response:
    monitor = Monitor.from_env({"ANALYTICS_STORAGE_URL": url})
    async with monitor:
        local = httpx.ASGITransport(monitor.dashboard, client=("127.0.0.1", 1))
        async with httpx.AsyncClient(transport=local, base_url="http://localhost") as client:
            params = {"kind": kind, "start": ISO_START, "end": ISO_END, "limit": "1000"}
            if fmt == "csv":
                params.update(format="csv", table="events")
            response = await client.get(f"/api/events/{project}", params=params)
    assert response.status_code == 200, response.text
    return response


@pytest.mark.parametrize("kind", ["api_call", "error"])
def test_the_csv_export_is_the_apis_csv(sqlite_url: str, kind: str, tmp_path: Path) -> None:
    fill(sqlite_url, sample())
    target = tmp_path / "export.csv"
    done = asgimon_cli(
        *("export", "--kind", kind, "--start", ISO_START, "--end", ISO_END, "--project", "shop"),
        *("--output", str(target)),
        env={"ANALYTICS_STORAGE_URL": sqlite_url},
    )
    assert done.returncode == 0, done.stderr
    expected = 30 if kind == "api_call" else 5
    assert done.stderr == f"asgimon: {expected} {kind} events written to {target}\n"
    assert done.stdout == ""
    assert not list(tmp_path.glob("*.partial"))
    api = asyncio.run(api_export(sqlite_url, "shop", kind, "csv"))
    assert target.read_bytes() == api.content
    rows = list(csv.DictReader(io.StringIO(api.text)))
    assert len(rows) == expected
    if kind == "error":
        assert rows[-1]["message"] == "'=HYPERLINK(1)"  # a formula is defused, as by the API
        assert rows[0]["message"] == "bad value, 4\nsecond line"
        assert json.loads(rows[0]["context"]) == {"order": 4, "tags": ["a", "b"]}


def test_the_json_export_is_the_apis_events(sqlite_url: str) -> None:
    fill(sqlite_url, sample())
    done = asgimon_cli(
        *("export", "--kind", "error", "--start", ISO_START, "--end", ISO_END),
        *("--project", "shop", "--format", "json"),
        env={"ANALYTICS_STORAGE_URL": sqlite_url},
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    api = asyncio.run(api_export(sqlite_url, "shop", "error", "json"))
    assert json.loads(done.stdout) == api.json()["events"]
    assert len(done.stdout.splitlines()) == 7  # "[", an event a line, "]"


def test_without_a_project_every_project_is_exported_in_turn(sqlite_url: str) -> None:
    fill(sqlite_url, sample())
    done = asgimon_cli(
        *("export", "--kind", "api_call", "--start", ISO_START, "--end", ISO_END),
        env={"ANALYTICS_STORAGE_URL": sqlite_url},
    )
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [r["projectId"] for r in rows] == ["docs"] * 30 + ["shop"] * 30
    stamps = [r["timestamp"] for r in rows[:30]]
    assert stamps == sorted(stamps, reverse=True)  # newest first, as the API lists them
    assert {r["endpoint"] for r in rows} == {"/items/{id}"}


@pytest.mark.parametrize(("fmt", "expected"), [("json", "[]\n"), ("csv", None)])
def test_an_empty_range_is_an_empty_document(
    sqlite_url: str, fmt: str, expected: str | None
) -> None:
    fill(sqlite_url, sample())
    done = asgimon_cli(
        *("export", "--kind", "build", "--range", "1h", "--format", fmt),
        env={"ANALYTICS_STORAGE_URL": sqlite_url},
    )
    assert done.returncode == 0, done.stderr
    if expected is not None:
        assert done.stdout == expected
    else:
        # The header alone: the columns of the kind, whatever the range holds.
        assert done.stdout.splitlines() == [export_command.csv_header("build")]
        assert done.stdout.startswith("kind,id,projectId,timestamp,deploymentId,phase,")


async def test_pages_hold_every_event_once_when_many_share_an_instant(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_command, "PAGE", 3)
    # Five events at one instant straddle the first page's end and outnumber a page; one
    # half a microsecond later is a later time only in stores keeping floats, where the
    # read of that instant finds it again.
    stamps = [START + 5, START + 3.0000005, *[START + 3] * 5, START + 2, START + 1, START + 1]
    stamps += [START - 1, END]
    events = [ApiCall(project_id="p", timestamp=t, duration_ms=1, total_ms=1) for t in stamps]
    await storage.write(events)
    pages = [page async for page in export_command.pages(storage, "api_call", "p", START, END)]
    seen = [ev.id for page in pages for ev in page]
    assert sorted(seen) == sorted(ev.id for ev in events if START <= ev.timestamp < END)
    times = [ev.timestamp for page in pages for ev in page]
    assert times == sorted(times, reverse=True)
    assert [len(page) for page in pages] == [7, 3]


# -- demo ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_demo_command_opens_onto_a_populated_dashboard(tmp_path: Path) -> None:
    env = {"ANALYTICS_STORAGE_URL": f"sqlite:///{tmp_path / 'demo.db'}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "asgimon.cli", "demo", "--port", "0", "--duration", "60"],
        cwd=tmp_path,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        # The banner line by line: communicate() would miss what readline() buffered.
        banner = [proc.stdout.readline() for _ in range(4)]
        address = re.fullmatch(
            r"asgimon dashboard: (http://127\.0\.0\.1:\d+/analytics/)\n", banner[0]
        )
        assert address is not None, banner
        dashboard = address.group(1)
        project: dict[str, Any] = {}
        counts: list[int] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            summary = httpx.get(dashboard + "api/summary", timeout=5).json()
            project = next((p for p in summary["projects"] if p["projectId"] == "default"), {})
            if project and project["deployments"]["count"]:
                counts.append(project["api"]["count"])
            if len(counts) >= 2 and counts[-1] > counts[0] + 50:
                break  # the history is there, and live traffic adds to it
            time.sleep(0.5)
        else:
            pytest.fail(f"the demo never showed moving data: {counts} {project}")
        endpoints = {e["endpoint"] for e in project["endpoints"]}
        assert "/projects/{project_id}/items/{item_id}" in endpoints
        assert project["builds"]["count"] > 0
        assert project["functions"]["count"] > 0
        assert project["errors"]["count"] > 0
        page = httpx.get(dashboard, timeout=10)
        assert page.status_code == 200
        assert "<h1>Overview" in page.text
        assert "Nothing recorded" not in page.text
        home = httpx.get(dashboard.removesuffix("analytics/"), timeout=5)
        assert home.status_code == 307
        assert home.headers["location"] == "/analytics/"
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C, as a person stops `make demo`
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail("the demo did not stop within 30 s of Ctrl-C:\n" + err[-3000:])
    assert proc.returncode == 0, err
    assert "/analytics/api/health" in "".join(banner)
    assert "Traceback" not in out + err
    assert (tmp_path / "demo.db").exists()


def test_a_reader_that_goes_away_ends_the_export_quietly(sqlite_url: str) -> None:
    calls: list[Event] = [
        ApiCall(project_id="shop", timestamp=START + i * 0.5, duration_ms=1, total_ms=1)
        for i in range(5000)  # more than a pipe holds
    ]
    fill(sqlite_url, calls)
    with subprocess.Popen(
        [sys.executable, "-m", "asgimon.cli", "export", "--kind", "api_call", "--range", "7d"],
        env={**os.environ, "ANALYTICS_STORAGE_URL": sqlite_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        assert proc.stdout.readline().startswith(b"kind,id,projectId,")
        proc.stdout.close()  # as `| head -1` does
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 1
    assert err == b""


@pytest.mark.parametrize("module", ["uvicorn", "httpx"])
def test_the_demo_without_its_extra_says_what_to_install(module: str, tmp_path: Path) -> None:
    # None in sys.modules makes the import fail, as if the package were not installed.
    code = (
        f"import sys; sys.modules[{module!r}] = None; from asgimon.cli import main; "
        "raise SystemExit(main(['demo', '--port', '0', '--duration', '1']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "ANALYTICS_STORAGE_URL": f"sqlite:///{tmp_path / 'demo.db'}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr == f"asgimon: the demo needs {module}: pip install 'asgimon[demo]'\n"
    assert done.stdout == ""
