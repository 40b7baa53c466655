"""What asgimon costs a host app at saturation, over real HTTP: uvicorn + wrk, req/s and p99.

    .venv/bin/python benchmarks/http_load.py                      # 6 variants x 3 rounds, ~4 min
    .venv/bin/python benchmarks/http_load.py --quick              # smoke run, well under a minute
    .venv/bin/python benchmarks/http_load.py --variants bare,asgimon-sqlite --rounds 5
    .venv/bin/python benchmarks/http_load.py --md out.md --json out.json
    .venv/bin/python benchmarks/http_load.py --rss [--rss-requests 1000000]   # memory, not speed

Every variant serves the same trivial Starlette app (``GET /items/{item_id}`` -> small JSON,
``GET /health`` -> "ok"):

  bare                the app alone (the baseline)
  timer               behind a hand-written pure-ASGI timing middleware (wraps send,
                      perf_counter, appends to a bounded deque): the floor for any monitoring
  asgimon-memory      ``Monitor(storage=MemoryStorage()).wrap(app)``: middleware, dashboard at
                      /analytics, the monitor started and drained by the lifespan
  asgimon-sqlite      the same on ``SQLStorage("sqlite:///...")``, a fresh temp file per server
  asgimon-postgresql  the same on PostgreSQL (127.0.0.1:5432/test), in a private schema
                      ``asgimon_http_*`` created before each server and dropped after it;
                      skipped with a note if PostgreSQL does not answer (unless
                      ``--require-postgresql``)
  ...-raw             every API call kept as a raw row (``ANALYTICS_API_CALL_SAMPLE_RATE=1``)
  ...-limit           the host's rate limit on (in memory, a limit never reached): without
                      the suffix it is off, and timing, errors and recording are measured
  prometheus          ``prometheus_fastapi_instrumentator.Instrumentator().instrument(app)``
                      (plus ``.expose(app)``, read once after the run): the peer

Method, per variant per round: a fresh uvicorn process (``loop="uvloop"``,
``http="httptools"``, one worker, no access log, log level warning) pinned to CPU 0 with
``taskset``; once ``/health`` answers, ``--warmup`` s of wrk, then the measured
``wrk -t1 -c16 -d<duration>s --latency`` pinned to CPU 1, GETs spread over ``/items/0`` ..
``/items/99``. For asgimon variants ``/analytics/api/health`` is read right after the
measured run (loopback clients are the admin when no auth is configured, so the full body
comes back), then the server gets SIGTERM; its lifespan drains the recorder and the child
prints the ledger after shutdown. ``--rounds`` rounds, the variant order rotated each round
(a noisy 2-core machine: server and client each own one core, nothing else should run).

Columns of the throughput table:
  req/s median/min/max   wrk's Requests/sec over the rounds
  ratio vs bare          median over rounds of (variant req/s / bare req/s of the same round)
  p99 median/min/max     wrk's 99th-percentile latency (ms) over the rounds
  Δp99 vs bare           the variant's median p99 minus bare's median p99 (ms)
  errors                 non-2xx responses plus socket errors, all rounds

Columns of the asgimon table (``/analytics/api/health`` after the measured run):
  lag p99 / lag max      median over rounds of ``eventLoop.lagP99Ms`` / ``lagMaxMs``: how late
                         a 10 ms timer fired, over the probe's 60 s window (the server's whole
                         life here: start-up, warm-up and measured run)
  own longest            median of ``eventLoop.ownLongestMs``: asgimon's writer's longest stretch
                         without yielding
  GC longest             median of ``eventLoop.gcLongestMs``: the longest GC pause
  sent (wrk)             requests wrk completed, warm-up plus measured, all rounds
  recorded ... pending   ``recorder`` as read then, summed over rounds (pending > 0 is normal:
                         the last second's batch is not written yet)
  after shutdown         the ledger the server printed once the lifespan drained it: ``ok``
                         when recorded == written + duplicates + dropped and nothing is pending

``--rss`` serves ``asgimon-sqlite`` once and drives it with ~5 s wrk runs until the health
endpoint's ``recorder.recorded`` passes ``--rss-requests``, sampling the server's VmRSS every
~2 s; it reports RSS after warm-up, at the first check past 25/50/75/100 % of the requests,
the largest sample and VmHWM, with the queue bounds in effect (asgimon's Settings defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from overhead import RawTimingMiddleware, bare_app
from starlette.types import ASGIApp

from asgimon import MemoryStorage, Monitor, Settings
from asgimon.storage.sql import SQLStorage

SCRIPT = os.path.realpath(__file__)
VARIANTS = (
    "bare",
    "timer",
    "asgimon-memory",
    "asgimon-sqlite",
    "asgimon-postgresql",
    "asgimon-sqlite-raw",
    "asgimon-postgresql-raw",
    "asgimon-memory-limit",
    "asgimon-sqlite-limit",
    "prometheus",
)
QUICK_VARIANTS = ("bare", "asgimon-memory", "asgimon-sqlite")
BASELINE = "bare"
ITEM_IDS = 100  # requests cycle through /items/0 .. /items/99
SERVER_CPU, CLIENT_CPU = 0, 1
MOUNT = Settings().mount_path
LOOP_KEYS = ("lagP99Ms", "lagMaxMs", "ownLongestMs", "gcLongestMs")
LEDGER_TAG = "ASGIMON-LEDGER "
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
RSS_CHUNK_S = 5
RSS_SAMPLE_S = 2.0
RSS_POINTS = (0.25, 0.50, 0.75, 1.00)
WRK_LUA = (
    "local i = 0\n"
    "request = function()\n"
    "  i = i + 1\n"
    f'  return wrk.format("GET", "/items/" .. (i % {ITEM_IDS}))\n'
    "end\n"
)


# -- the app under test (built in the server process) ---------------------------------------


def store_of(variant: str) -> str:
    return variant.removesuffix("-raw").removesuffix("-limit")


def build_app(args: argparse.Namespace) -> tuple[ASGIApp, Monitor | None]:
    if args.variant == "bare":
        return bare_app(), None
    if args.variant == "timer":
        return RawTimingMiddleware(bare_app()), None
    if args.variant == "prometheus":
        from prometheus_fastapi_instrumentator import Instrumentator

        app = bare_app()
        Instrumentator().instrument(app).expose(app)
        return app, None
    # "-raw": every API call kept as a raw row, whatever the default sampling.
    store, raw = store_of(args.variant), args.variant.endswith("-raw")
    # "-limit": the host's rate limit in memory on every request (its cost is part of the
    # figure), never refusing; otherwise off, as timing, errors and recording are measured.
    options: dict[str, Any] = {"rate_limit_enabled": False}
    if args.variant.endswith("-limit"):
        options = {"rate_limit_max": 10**9}
    if raw:
        options["api_call_sample_rate"] = 1.0
    elif args.sample_rate is not None:
        options["api_call_sample_rate"] = args.sample_rate
    if store == "asgimon-memory":
        monitor = Monitor(storage=MemoryStorage(), **options)
    elif store == "asgimon-sqlite":
        monitor = Monitor(storage=SQLStorage(f"sqlite:///{args.sqlite}"), **options)
    elif store == "asgimon-postgresql":
        monitor = Monitor(storage=SQLStorage(args.pg_url, schema=args.pg_schema), **options)
    else:
        raise SystemExit(f"unknown variant {args.variant!r}")
    return monitor.wrap(bare_app()), monitor


def serve(argv: list[str]) -> None:
    """The hidden ``_serve`` subcommand: one variant under uvicorn until SIGTERM."""
    import uvicorn

    ap = argparse.ArgumentParser(prog="http_load.py _serve")
    ap.add_argument("--variant", required=True, choices=VARIANTS)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--sqlite", default="")
    ap.add_argument("--pg-url", default=PG_URL)
    ap.add_argument("--pg-schema", default=None)
    ap.add_argument("--sample-rate", type=float, default=None)
    args = ap.parse_args(argv)
    app, monitor = build_app(args)
    # uvicorn re-raises the SIGTERM it caught once it has shut down; with the default
    # handler that kills the process before the drained ledger below is printed.
    signal.signal(signal.SIGTERM, lambda *_: None)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
    )
    if monitor is not None:
        s = monitor.stats()
        ledger = {
            "recorded": s.recorded,
            "written": s.written,
            "duplicates": s.duplicates,
            "droppedTotal": s.dropped_total,
            "dropped": {k: n for k, n in s.dropped.items() if n},
            "pending": s.pending,
            "batches": s.batches,
        }
        print(LEDGER_TAG + json.dumps(ledger), flush=True)


# -- driving a server (the parent process) ---------------------------------------------------


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """A blocking HTTP/1.1 GET to 127.0.0.1: no proxies, no proxy headers, loopback Host."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, body


def pinning() -> tuple[list[str], list[str], str]:
    """taskset prefixes for the server and for wrk, and what was done, for the report."""
    taskset = shutil.which("taskset")
    if taskset is None:
        log("warning: taskset not found, server and wrk run unpinned")
        return [], [], "unpinned (no taskset)"
    if not {SERVER_CPU, CLIENT_CPU} <= os.sched_getaffinity(0):
        log(f"warning: CPUs {SERVER_CPU} and {CLIENT_CPU} not both available, running unpinned")
        return [], [], "unpinned (CPUs unavailable)"
    return (
        [taskset, "-c", str(SERVER_CPU)],
        [taskset, "-c", str(CLIENT_CPU)],
        f"server on CPU {SERVER_CPU}, wrk on CPU {CLIENT_CPU}",
    )


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(out: str) -> dict[str, Any]:
    """req/s, p50/p99 (ms), requests and errors from ``wrk --latency`` (as peerbench.py)."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not rps:
        raise RuntimeError("cannot parse wrk output:\n" + out)
    res: dict[str, Any] = {"rps": float(rps.group(1)), "errors": 0}
    for q in ("50", "99"):
        m = re.search(rf"^\s*{q}(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        res[f"p{q}_ms"] = float(m.group(1)) * _UNIT[m.group(2)] if m else float("nan")
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m:
        res["errors"] += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res["errors"] += sum(int(x) for x in m.groups())
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = int(m.group(1)) if m else 0
    return res


@dataclass
class Driver:
    """How to start servers and load them: shared by every measurement of one invocation."""

    tmp: Path
    server_prefix: list[str]
    client_prefix: list[str]
    connections: int
    pg_url: str
    sample_rate: float | None = None
    lua: Path = field(init=False)

    def __post_init__(self) -> None:
        self.lua = self.tmp / "items.lua"
        self.lua.write_text(WRK_LUA)

    def wrk(self, port: int, seconds: int) -> dict[str, Any]:
        cmd = [
            *self.client_prefix,
            "wrk",
            "-t1",
            f"-c{self.connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(self.lua),
            f"http://127.0.0.1:{port}/",
        ]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
        if p.returncode != 0:
            raise RuntimeError(f"wrk failed (rc={p.returncode}): {p.stderr[-2000:]}")
        return parse_wrk(p.stdout)


@dataclass
class Server:
    variant: str
    proc: subprocess.Popen[str]
    port: int
    log: Path
    ledger: dict[str, Any] | None = None  # printed by the server after shutdown

    def health(self) -> dict[str, Any]:
        status, body = http_get(self.port, f"{MOUNT}/api/health")
        if status != 200:
            raise RuntimeError(f"{MOUNT}/api/health answered {status}: {body[:300]!r}")
        found: dict[str, Any] = json.loads(body)
        if "recorder" not in found:
            raise RuntimeError("the health endpoint gave the public body: not seen as local")
        return found

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def wait_ready(srv: Server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if srv.proc.poll() is not None:
            raise RuntimeError(
                f"{srv.variant} exited early (rc={srv.proc.returncode}):\n{srv.tail()}"
            )
        with contextlib.suppress(OSError):
            if http_get(srv.port, "/health", timeout=1.0)[0] == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{srv.variant} not ready after {timeout:g} s:\n{srv.tail()}")


def stop(srv: Server, grace: float = 30.0) -> None:
    """SIGTERM (uvicorn's graceful shutdown: the lifespan drains asgimon), then its ledger."""
    if srv.proc.poll() is None:
        srv.proc.send_signal(signal.SIGTERM)
    try:
        out, _ = srv.proc.communicate(timeout=grace)
    except subprocess.TimeoutExpired:
        log(f"warning: {srv.variant} ignored SIGTERM for {grace:g} s, killed")
        srv.proc.kill()
        out, _ = srv.proc.communicate()
    for line in out.splitlines():
        if line.startswith(LEDGER_TAG):
            srv.ledger = json.loads(line[len(LEDGER_TAG) :])


async def _pg(url: str, sql: str) -> str:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.execute(sql)
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def pg_execute(url: str, sql: str) -> str:
    """Run ``sql`` on PostgreSQL; returns the server's version."""
    return asyncio.run(_pg(url, sql))


@contextlib.contextmanager
def running(variant: str, d: Driver) -> Iterator[Server]:
    """A fresh server for ``variant`` (and a fresh store), stopped and cleaned up after."""
    tag = uuid.uuid4().hex[:12]
    port = free_port()
    extra: list[str] = []
    db: Path | None = None
    schema: str | None = None
    store = store_of(variant)
    if d.sample_rate is not None:
        extra = ["--sample-rate", str(d.sample_rate)]
    if store == "asgimon-sqlite":
        db = d.tmp / f"http-{tag}.db"
        extra += ["--sqlite", str(db)]
    elif store == "asgimon-postgresql":
        # A schema of its own: the server is the machine's shared PostgreSQL.
        schema = f"asgimon_http_{tag}"
        pg_execute(d.pg_url, f'CREATE SCHEMA "{schema}"')
        extra += ["--pg-url", d.pg_url, "--pg-schema", schema]
    cmd = [
        *d.server_prefix,  # taskset execs: the pid is the Python process's own
        sys.executable,
        SCRIPT,
        "_serve",
        "--variant",
        variant,
        "--port",
        str(port),
        *extra,
    ]
    path = d.tmp / f"{variant}-{tag}.log"
    try:
        with path.open("w") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        srv = Server(variant, proc, port, path)
        try:
            wait_ready(srv)
            yield srv
        finally:
            stop(srv)
    finally:
        if db is not None:
            for suffix in ("", "-wal", "-shm"):
                db.with_name(db.name + suffix).unlink(missing_ok=True)
        if schema is not None:
            pg_execute(d.pg_url, f'DROP SCHEMA "{schema}" CASCADE')


def prometheus_count(port: int) -> int:
    """Requests the instrumentator counted (``http_requests_total``), from its /metrics."""
    status, body = http_get(port, "/metrics")
    if status != 200:
        return -1
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("http_requests_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def measure(variant: str, r: int, d: Driver, args: argparse.Namespace) -> dict[str, Any]:
    with running(variant, d) as srv:
        sent = 0
        if args.warmup > 0:
            sent += d.wrk(srv.port, args.warmup)["requests"]
        res = d.wrk(srv.port, args.duration)
        sent += res["requests"]
        found = srv.health() if variant.startswith("asgimon") else None
        counted = prometheus_count(srv.port) if variant == "prometheus" else None
    run: dict[str, Any] = {"variant": variant, "round": r, **res, "sent": sent}
    if found is not None:
        rec = found["recorder"]
        run["recorder"] = {
            k: rec[k] for k in ("recorded", "written", "duplicates", "dropped", "droppedTotal")
        } | {"pending": rec["pending"]}
        loop = found["eventLoop"]
        run["eventLoop"] = {k: loop[k] for k in ("windowS", "samples", *LOOP_KEYS)}
        run["after_shutdown"] = srv.ledger
    if counted is not None:
        run["prometheus_counted"] = counted
    return run


# -- the table ---------------------------------------------------------------------------------


def rotated(items: list[str], r: int) -> list[str]:
    k = r % len(items)
    return items[k:] + items[:k]


def _median(values: list[float | None]) -> float | None:
    found = [v for v in values if v is not None]
    return statistics.median(found) if found else None


def problems(runs: list[dict[str, Any]]) -> list[str]:
    out = []
    errors = sum(r["errors"] for r in runs)
    if errors:
        out.append(f"{errors} errors")
    for r in runs:
        rec = r.get("recorder")
        if rec is None:
            continue
        rnd = f"round {r['round'] + 1}"
        if (
            rec["recorded"]
            != rec["written"] + rec["duplicates"] + rec["droppedTotal"] + rec["pending"]
        ):
            out.append(f"{rnd}: health ledger does not add up")
        if rec["droppedTotal"]:
            out.append(f"{rnd}: dropped {rec['droppedTotal']} {rec['dropped']}")
        final = r.get("after_shutdown")
        if final is None:
            out.append(f"{rnd}: no ledger after shutdown")
        elif final["pending"] or final["recorded"] != (
            final["written"] + final["duplicates"] + final["droppedTotal"]
        ):
            out.append(f"{rnd}: after shutdown {final}")
        elif final["recorded"] < r["sent"]:
            out.append(f"{rnd}: recorded {final['recorded']} < sent {r['sent']}")
    return out


def summarise(runs: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    bare = {r["round"]: r for r in runs if r["variant"] == BASELINE}
    bare_p99 = statistics.median(r["p99_ms"] for r in bare.values()) if bare else None
    rows = []
    for name in names:
        mine = [r for r in runs if r["variant"] == name]
        rps = [r["rps"] for r in mine]
        p99 = [r["p99_ms"] for r in mine]
        ratios = [r["rps"] / bare[r["round"]]["rps"] for r in mine if r["round"] in bare]
        row: dict[str, Any] = {
            "variant": name,
            "rounds": len(mine),
            "rps_median": statistics.median(rps),
            "rps_min": min(rps),
            "rps_max": max(rps),
            "ratio": statistics.median(ratios) if ratios else None,
            "p99_median_ms": statistics.median(p99),
            "p99_min_ms": min(p99),
            "p99_max_ms": max(p99),
            "p99_minus_bare_ms": None if bare_p99 is None else statistics.median(p99) - bare_p99,
            "errors": sum(r["errors"] for r in mine),
            "sent": sum(r["sent"] for r in mine),
            "problems": problems(mine),
        }
        if name.startswith("asgimon"):
            row["eventLoop"] = {k: _median([r["eventLoop"][k] for r in mine]) for k in LOOP_KEYS}
            row["eventLoop"]["samples_min"] = min(r["eventLoop"]["samples"] for r in mine)
            row["recorder"] = {
                k: sum(r["recorder"][k] for r in mine)
                for k in ("recorded", "written", "duplicates", "droppedTotal", "pending")
            }
        if name == "prometheus":
            row["prometheus_counted"] = sum(r["prometheus_counted"] for r in mine)
        rows.append(row)
    return rows


def _f(v: float | None, fmt: str = ".2f") -> str:
    return "—" if v is None else format(v, fmt)


def render_md(env: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = [
        f"Python {env['python']} on {env['platform']}, {env['cpus']} CPUs; uvicorn "
        f"{env['uvicorn']} (uvloop {env['uvloop']}, httptools {env['httptools']}), starlette "
        f"{env['starlette']}, asgimon {env['asgimon']}, prometheus-fastapi-instrumentator "
        f"{env['pfi']}, PostgreSQL {env['postgresql']}; {env['wrk']}; {env['date']}.",
        f"{env['rounds']} round(s), order rotated each round; per variant per round a fresh "
        f"server, {env['warmup']} s warm-up then `wrk -t1 -c{env['connections']} "
        f"-d{env['duration']}s --latency` over /items/0..99; {env['pinning']}.",
    ]
    lines += [f"Note: {n}" for n in env["notes"]]
    lines += [
        "",
        "| variant | req/s median | min | max | ratio vs bare | p99 ms median | min | max "
        "| Δp99 vs bare ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        delta = "—" if r["variant"] == BASELINE else _f(r["p99_minus_bare_ms"], "+.2f")
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        lines.append(
            f"| {r['variant']} | {r['rps_median']:,.0f} | {r['rps_min']:,.0f} | "
            f"{r['rps_max']:,.0f} | {ratio} | {r['p99_median_ms']:.2f} | {r['p99_min_ms']:.2f} | "
            f"{r['p99_max_ms']:.2f} | {delta} | {r['errors']} |"
        )
    monitored = [r for r in rows if "eventLoop" in r]
    if monitored:
        lines += [
            "",
            f"asgimon, from `{MOUNT}/api/health` after the measured run (event loop: median over "
            "rounds; ledger: summed over rounds, as read then):",
            "",
            "| variant | lag p99 ms | lag max ms | own longest ms | GC longest ms | sent (wrk) "
            "| recorded | written | dropped | pending | after shutdown |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in monitored:
            el, rec = r["eventLoop"], r["recorder"]
            lines.append(
                f"| {r['variant']} | {_f(el['lagP99Ms'])} | {_f(el['lagMaxMs'])} | "
                f"{_f(el['ownLongestMs'])} | {_f(el['gcLongestMs'])} | {r['sent']:,} | "
                f"{rec['recorded']:,} | {rec['written']:,} | {rec['droppedTotal']:,} | "
                f"{rec['pending']:,} | {'; '.join(r['problems']) or 'ok'} |"
            )
    others = [r for r in rows if "eventLoop" not in r and r["problems"]]
    lines += [""] if others else []
    lines += [f"- `{r['variant']}`: {'; '.join(r['problems'])}" for r in others]
    for r in rows:
        if "prometheus_counted" in r:
            lines += [
                "",
                f"prometheus counted {r['prometheus_counted']:,} requests "
                f"(`http_requests_total`; wrk completed {r['sent']:,}).",
            ]
    return "\n".join(lines) + "\n"


# -- --rss -------------------------------------------------------------------------------------


def proc_status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/{pid}/status")


class RssSampler(threading.Thread):
    """VmRSS of one process every ``interval`` s, in the background."""

    def __init__(self, pid: int, interval: float = RSS_SAMPLE_S) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._done = threading.Event()
        self._t0 = time.monotonic()

    def run(self) -> None:
        while not self._done.is_set():
            with contextlib.suppress(OSError, RuntimeError):
                self.samples.append(
                    (time.monotonic() - self._t0, proc_status_kib(self.pid, "VmRSS"))
                )
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()


def measure_rss(d: Driver, args: argparse.Namespace) -> dict[str, Any]:
    target = args.rss_requests
    checks: list[dict[str, Any]] = []
    with running("asgimon-sqlite", d) as srv:
        pid = srv.proc.pid
        # taskset execs the server, so the pid is uvicorn's Python process, not a wrapper.
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        if argv0 != sys.executable:
            raise RuntimeError(f"pid {pid} runs {argv0!r}, not {sys.executable}")
        sampler = RssSampler(pid)
        sampler.start()
        started = time.monotonic()
        try:
            if args.warmup > 0:
                d.wrk(srv.port, args.warmup)
            rec = srv.health()["recorder"]
            warm = {"recorded": rec["recorded"], "rss_kib": proc_status_kib(pid, "VmRSS")}
            while rec["recorded"] < target:
                res = d.wrk(srv.port, RSS_CHUNK_S)
                rec = srv.health()["recorder"]
                checks.append(
                    {
                        "elapsed_s": round(time.monotonic() - started, 1),
                        "recorded": rec["recorded"],
                        "pending": rec["pending"],
                        "droppedTotal": rec["droppedTotal"],
                        "rps": res["rps"],
                        "errors": res["errors"],
                        "rss_kib": proc_status_kib(pid, "VmRSS"),
                    }
                )
                log(
                    f"[rss] {rec['recorded']:>9,} recorded  {res['rps']:8.0f} req/s  "
                    f"RSS {checks[-1]['rss_kib'] / 1024:6.1f} MiB  pending {rec['pending']}"
                )
            hwm = proc_status_kib(pid, "VmHWM")
        finally:
            sampler.stop()
    points = []
    for q in RSS_POINTS:
        hit = next((c for c in checks if c["recorded"] >= q * target), None)
        if hit is not None:
            points.append({"share": q, **hit})
    settings = Settings()
    return {
        "target": target,
        "after_warmup": warm,
        "points": points,
        "checks": checks,
        "samples": sampler.samples,
        "max_sampled_kib": max(kib for _, kib in sampler.samples),
        "vm_hwm_kib": hwm,
        "queue_max_events": settings.queue_max_events,
        "queue_max_bytes": settings.queue_max_bytes,
        "batch_size": settings.batch_size,
        "flush_interval": settings.flush_interval,
        "after_shutdown": srv.ledger,
        "seconds": round(time.monotonic() - started, 1),
    }


def render_rss_md(env: dict[str, Any], rss: dict[str, Any]) -> str:
    base = rss["after_warmup"]["rss_kib"]

    def mib(kib: int) -> str:
        return f"{kib / 1024:.1f}"

    def delta(kib: int) -> str:
        return f"{(kib - base) / 1024:+.1f}"

    lines = [
        f"Python {env['python']} on {env['platform']}, {env['cpus']} CPUs; uvicorn "
        f"{env['uvicorn']}, asgimon {env['asgimon']}; {env['wrk']}; {env['date']}.",
        f"asgimon-sqlite served once, {rss['target']:,} requests in {RSS_CHUNK_S} s wrk runs "
        f"(-c{env['connections']}) after {env['warmup']} s warm-up, {rss['seconds']:g} s in all; "
        f"VmRSS of the uvicorn process sampled every {RSS_SAMPLE_S:g} s; {env['pinning']}.",
        f"Queue bounds in effect (Settings defaults): queue_max_events "
        f"{rss['queue_max_events']:,}, queue_max_bytes {rss['queue_max_bytes']:,} "
        f"({rss['queue_max_bytes'] / 2**20:g} MiB); batch_size {rss['batch_size']:,}, "
        f"flush_interval {rss['flush_interval']:g} s.",
        "",
        "| point | recorded | RSS MiB | Δ vs after warm-up MiB | pending | dropped |",
        "|---|---:|---:|---:|---:|---:|",
        f"| after warm-up | {rss['after_warmup']['recorded']:,} | {mib(base)} | +0.0 | — | — |",
    ]
    for p in rss["points"]:
        lines.append(
            f"| {p['share']:.0%} | {p['recorded']:,} | {mib(p['rss_kib'])} | "
            f"{delta(p['rss_kib'])} | {p['pending']:,} | {p['droppedTotal']:,} |"
        )
    lines += [
        f"| max sampled | — | {mib(rss['max_sampled_kib'])} | {delta(rss['max_sampled_kib'])} "
        "| — | — |",
        f"| VmHWM (peak) | — | {mib(rss['vm_hwm_kib'])} | {delta(rss['vm_hwm_kib'])} | — | — |",
        "",
        f"Ledger after shutdown: {rss['after_shutdown']}.",
    ]
    return "\n".join(lines) + "\n"


# -- main --------------------------------------------------------------------------------------


def pkg(name: str) -> str:
    try:
        return version(name)
    except Exception:
        return "?"


def environment(args: argparse.Namespace, pinned: str, pg: str) -> dict[str, Any]:
    p = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    text = (p.stdout or p.stderr).strip()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": len(os.sched_getaffinity(0)),
        "uvicorn": pkg("uvicorn"),
        "uvloop": pkg("uvloop"),
        "httptools": pkg("httptools"),
        "starlette": pkg("starlette"),
        "asgimon": pkg("asgimon"),
        "pfi": pkg("prometheus-fastapi-instrumentator"),
        "postgresql": pg,
        "wrk": text.splitlines()[0].split(" Copyright")[0] if text else "wrk",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "rounds": args.rounds,
        "warmup": args.warmup,
        "duration": args.duration,
        "connections": args.connections,
        "pinning": pinned,
        "notes": [],
    }


def csv(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_serve"]:
        serve(argv[1:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--variants", type=csv, default=None, help=f"comma-separated: {VARIANTS}")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--warmup", type=int, default=2, help="s of wrk before each measurement")
    ap.add_argument("--duration", type=int, default=8, help="s of the measured wrk run")
    ap.add_argument("--connections", type=int, default=16, help="wrk -c (default 16)")
    ap.add_argument("--pg-url", default=PG_URL)
    ap.add_argument("--require-postgresql", action="store_true", help="fail if PG is down")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round, 1 s + 2 s")
    ap.add_argument("--rss", action="store_true", help="RSS of asgimon-sqlite over N requests")
    ap.add_argument("--rss-requests", type=int, default=1_000_000)
    ap.add_argument(
        "--sample-rate",
        type=float,
        default=None,
        help="ANALYTICS_API_CALL_SAMPLE_RATE for the asgimon variants without -raw",
    )
    ap.add_argument("--md", type=Path, help="also write the markdown table(s) here")
    ap.add_argument("--json", type=Path, help="write raw results here")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.warmup, args.duration = 1, 1, 2
    if args.variants is None:
        args.variants = list(QUICK_VARIANTS if args.quick else VARIANTS)
    for v in args.variants:
        if v not in VARIANTS:
            raise SystemExit(f"unknown variant {v!r}: choose from {', '.join(VARIANTS)}")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")

    notes: list[str] = []
    pg = "—"
    on_pg = [v for v in args.variants if v.startswith("asgimon-postgresql")]
    if on_pg and not args.rss:
        try:
            pg = pg_execute(args.pg_url, "SELECT 1")
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            if args.require_postgresql:
                raise SystemExit(f"PostgreSQL at {args.pg_url} does not answer: {exc!r}") from exc
            note = (
                f"{', '.join(on_pg)} skipped: PostgreSQL at {args.pg_url} does not answer ({exc})"
            )
            print(note)
            notes.append(note)
            args.variants = [v for v in args.variants if v not in on_pg]
    server_prefix, client_prefix, pinned = pinning()
    env = environment(args, pinned, pg)
    env["notes"] = notes
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="asgimon-http-") as tmp:
        d = Driver(
            Path(tmp),
            server_prefix,
            client_prefix,
            args.connections,
            args.pg_url,
            args.sample_rate,
        )
        if args.rss:
            rss = measure_rss(d, args)
            env["seconds"] = round(time.monotonic() - started, 1)
            md = render_rss_md(env, rss)
            result: dict[str, Any] = {"env": env, "rss": rss}
        else:
            runs: list[dict[str, Any]] = []
            for r in range(args.rounds):
                for v in rotated(args.variants, r):
                    run = measure(v, r, d, args)
                    runs.append(run)
                    extra = ""
                    if "recorder" in run:
                        rec, el = run["recorder"], run["eventLoop"]
                        extra = (
                            f"  recorded={rec['recorded']} written={rec['written']} "
                            f"dropped={rec['droppedTotal']} pending={rec['pending']} "
                            f"lagP99={el['lagP99Ms']}ms"
                        )
                    log(
                        f"[r{r + 1}/{args.rounds}] {v:<19} {run['rps']:9.0f} req/s  "
                        f"p99={run['p99_ms']:.2f} ms  errors={run['errors']}{extra}"
                    )
            env["seconds"] = round(time.monotonic() - started, 1)
            rows = summarise(runs, args.variants)
            md = render_md(env, rows)
            result = {"env": env, "rows": rows, "runs": runs}
    print(md)
    if args.md:
        args.md.write_text(md)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
