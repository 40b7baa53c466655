"""Per-request cost of asgimon's middleware, driven in-process through ASGI (no sockets).

    .venv/bin/python benchmarks/overhead.py                  # 30 rounds x 2000 requests
    .venv/bin/python benchmarks/overhead.py --quick          # smoke run, a few seconds
    .venv/bin/python benchmarks/overhead.py --md out.md --json out.json

Every variant wraps the same trivial Starlette app (``GET /items/{item_id}`` -> small JSON)
and all of them live in ONE process and ONE event loop. They are timed in round-robin
batches (the order rotates each round), so each round gives a paired difference to the bare
app that cancels most machine noise. Each request gets a fresh uvicorn-like scope and
uvicorn's receive/send semantics, and the driver yields to the event loop after each request
(as a server does between socket reads), so asgimon's background flush task really runs
inside the timed window of the variant that queued the work.

Variants:
  starlette       the bare app (baseline)
  raw-timing      a minimal hand-written pure-ASGI timing middleware (the floor)
  asgimon-path    asgimon's request path only: monitor never started, nothing converted
  asgimon-memory  asgimon end to end on MemoryStorage: queue, flush, convert, aggregate
  asgimon-sqlite  asgimon end to end on SQLite in a temp dir (aiosqlite thread included)

For the two end-to-end variants each timed batch ends with ``recorder.flush()``, so every
request a batch queued is converted and stored inside that batch's window, never in
another variant's.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from time import perf_counter
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asgimon import AsgimonMiddleware, MemoryStorage, Monitor

ITEM_IDS = 100  # requests cycle through /items/0 .. /items/99
BASELINE = "starlette"


# -- the app under test ------------------------------------------------------------------


async def get_item(request: Request) -> JSONResponse:
    item_id = request.path_params["item_id"]
    return JSONResponse({"id": item_id, "name": f"item-{item_id}", "price": 9.99, "stock": True})


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def bare_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/items/{item_id}", get_item, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ]
    )


class RawTimingMiddleware:
    """The cheapest honest timing middleware: wrap send, perf_counter, append to a deque."""

    def __init__(self, app: ASGIApp, keep: int = 10_000) -> None:
        self.app = app
        # Bounded, so a long HTTP run does not grow the heap the collector walks.
        self.records: deque[tuple[str, int, float]] = deque(maxlen=keep)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = perf_counter()
        status = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.records.append((scope["path"], status, perf_counter() - start))


# -- a uvicorn-like driver -----------------------------------------------------------------

_DISCONNECT: Message = {"type": "http.disconnect"}


class Cycle:
    """receive/send for one request with uvicorn's semantics: the body once, then
    ``http.disconnect`` only after the response is complete."""

    __slots__ = ("done", "event", "request_sent", "status")

    def __init__(self) -> None:
        self.request_sent = False
        self.done = False
        self.status = 0
        self.event: asyncio.Event | None = None

    async def receive(self) -> Message:
        if not self.request_sent:
            self.request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        if not self.done:
            if self.event is None:
                self.event = asyncio.Event()
            await self.event.wait()
        return _DISCONNECT

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
        elif kind == "http.response.body" and not message.get("more_body", False):
            self.done = True
            if self.event is not None:
                self.event.set()


def scope_template(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"asgimon-bench"),
            (b"accept", b"*/*"),
        ],
    }


TEMPLATES = [scope_template(f"/items/{i}") for i in range(ITEM_IDS)]


async def drive(app: ASGIApp, state: dict[str, Any], n: int) -> int:
    """``n`` sequential requests; returns how many did not answer 200."""
    bad = 0
    for i in range(n):
        scope = TEMPLATES[i % ITEM_IDS].copy()
        scope["headers"] = list(scope["headers"])
        scope["state"] = state.copy()
        cycle = Cycle()
        await app(scope, cycle.receive, cycle.send)
        if cycle.status != 200:
            bad += 1
        await asyncio.sleep(0)  # a server returns to the loop between requests
    return bad


class Lifespan:
    """Drives the ASGI lifespan protocol the way uvicorn's ``lifespan="on"`` does."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self._to_app: asyncio.Queue[Message] = asyncio.Queue()
        self._from_app: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self.state}
        self._task = asyncio.ensure_future(self.app(scope, self._to_app.get, self._from_app.put))
        await self._to_app.put({"type": "lifespan.startup"})
        message = await asyncio.wait_for(self._from_app.get(), 10)
        if message["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"lifespan startup failed: {message}")

    async def shutdown(self) -> None:
        await self._to_app.put({"type": "lifespan.shutdown"})
        message = await asyncio.wait_for(self._from_app.get(), 30)
        if message["type"] != "lifespan.shutdown.complete":
            raise RuntimeError(f"lifespan shutdown failed: {message}")
        if self._task is not None:
            await self._task


# -- variants ------------------------------------------------------------------------------


@dataclass
class Variant:
    name: str
    doc: str
    app: ASGIApp
    monitor: Monitor | None = None
    lifespan: Lifespan | None = None
    flush_in_window: bool = False  # end the timed batch with recorder.flush()
    after_batch: Callable[[], None] | None = None  # untimed housekeeping
    us: list[float] = field(default_factory=list)  # wall µs/request per round
    cpu_us: list[float] = field(default_factory=list)  # process CPU µs/request per round
    bad: int = 0

    @property
    def state(self) -> dict[str, Any]:
        return self.lifespan.state if self.lifespan is not None else {}


def build_variants(tmp: Path, total_requests: int) -> list[Variant]:
    raw = RawTimingMiddleware(bare_app())

    # The rate limit applied to every request (its cost is part of the figure), never refusing;
    # the system metrics off, so that the ledger holds the requests alone.
    quiet: dict[str, Any] = {"rate_limit_max": 10**9, "system_metrics_interval": 0}
    memory = Monitor(storage=MemoryStorage(), flush_interval=1.0, **quiet)
    memory_app = AsgimonMiddleware(bare_app(), monitor=memory)

    sqlite = Monitor(storage_url=f"sqlite:///{tmp / 'bench.db'}", flush_interval=1.0, **quiet)
    sqlite_app = AsgimonMiddleware(bare_app(), monitor=sqlite)

    # Request path only: the queue holds every request of the run, and the monitor claims to
    # be started so the middleware's lazy start never launches the flush task.
    path_only = Monitor(
        storage=MemoryStorage(),
        queue_max_events=total_requests + 1,
        queue_max_bytes=(total_requests + 1) * 4096,
        **quiet,
    )
    path_only.started = True
    # As once started on this loop: its records take the request path's lock-free way.
    path_only.recorder._loop_thread = threading.get_ident()
    path_app = AsgimonMiddleware(bare_app(), monitor=path_only)

    def discard_queue() -> None:
        # Benchmark-only: keep the heap the same size from round to round (a real recorder
        # drains its queue every second); nothing is converted, so nothing else changes.
        recorder = path_only.recorder
        recorder._queue.clear()
        recorder._sizes.clear()
        recorder._bytes = 0
        recorder._records.clear()

    return [
        Variant(BASELINE, "bare Starlette app", bare_app()),
        Variant(
            "raw-timing",
            "hand-written pure-ASGI timing middleware",
            raw,
            after_batch=raw.records.clear,
        ),
        Variant(
            "asgimon-path",
            "asgimon request path only (no flush task)",
            path_app,
            monitor=path_only,
            after_batch=discard_queue,
        ),
        Variant(
            "asgimon-memory",
            "asgimon + MemoryStorage, flush in window",
            memory_app,
            monitor=memory,
            lifespan=Lifespan(memory_app),
            flush_in_window=True,
        ),
        Variant(
            "asgimon-sqlite",
            "asgimon + SQLite (temp dir), flush in window",
            sqlite_app,
            monitor=sqlite,
            lifespan=Lifespan(sqlite_app),
            flush_in_window=True,
        ),
    ]


# -- the run -------------------------------------------------------------------------------


def rotated(items: list[Variant], r: int) -> list[Variant]:
    k = r % len(items)
    return items[k:] + items[:k]


async def run(variants: list[Variant], rounds: int, batch: int, warmup: int) -> None:
    for v in variants:
        if v.lifespan is not None:
            await v.lifespan.startup()
        v.bad += await drive(v.app, v.state, warmup)
        if v.flush_in_window and v.monitor is not None:
            await v.monitor.recorder.flush()
        if v.after_batch is not None:
            v.after_batch()
    for r in range(rounds):
        for v in rotated(variants, r):
            gc.collect()
            cpu0 = time.process_time_ns()
            t0 = time.perf_counter_ns()
            v.bad += await drive(v.app, v.state, batch)
            if v.flush_in_window and v.monitor is not None:
                await v.monitor.recorder.flush()
            t1 = time.perf_counter_ns()
            cpu1 = time.process_time_ns()
            v.us.append((t1 - t0) / 1e3 / batch)
            v.cpu_us.append((cpu1 - cpu0) / 1e3 / batch)
            if v.after_batch is not None:
                v.after_batch()
    for v in variants:
        if v.lifespan is not None:
            await v.lifespan.shutdown()


def summarise(variants: list[Variant]) -> list[dict[str, Any]]:
    base = next(v for v in variants if v.name == BASELINE)
    base_median = statistics.median(base.us)
    rows = []
    for v in variants:
        median = statistics.median(v.us)
        paired = [a - b for a, b in zip(v.us, base.us, strict=True)]
        rows.append(
            {
                "variant": v.name,
                "doc": v.doc,
                "median_us": median,
                "min_us": min(v.us),
                "max_us": max(v.us),
                "cpu_median_us": statistics.median(v.cpu_us),
                "paired_delta_us": statistics.median(paired),
                "paired_delta_min_us": min(paired),
                "paired_delta_max_us": max(paired),
                "ratio": median / base_median,
                "bad": v.bad,
                "rounds_us": v.us,
            }
        )
    return rows


def ledger(variants: list[Variant], expected: int) -> list[dict[str, Any]]:
    """After shutdown every recorded request is written, a duplicate, or counted dropped."""
    out = []
    for v in variants:
        if v.lifespan is None or v.monitor is None:
            continue
        s = v.monitor.stats()
        assert s.recorded == s.written + s.duplicates + s.dropped_total, (v.name, s)
        assert s.pending == 0, (v.name, s)
        assert s.recorded == expected, (v.name, s.recorded, expected)
        out.append(
            {
                "variant": v.name,
                "recorded": s.recorded,
                "written": s.written,
                "duplicates": s.duplicates,
                "dropped_total": s.dropped_total,
                "dropped": {k: n for k, n in s.dropped.items() if n},
                "batches": s.batches,
            }
        )
    return out


def render_md(env: dict[str, Any], rows: list[dict[str, Any]], books: list[dict[str, Any]]) -> str:
    lines = [
        f"Python {env['python']} on {env['platform']}, {env['cpus']} CPUs, loop {env['loop']}, "
        f"starlette {env['starlette']}, asgimon {env['asgimon']}; {env['date']}.",
        f"{env['rounds']} rounds x {env['batch']} requests per variant (after {env['warmup']} "
        "warm-up), round-robin, order rotated each round.",
        "",
        "| variant | median µs/req | min | max | CPU µs/req | paired Δ vs bare µs "
        "(median [min, max]) | ratio | non-200 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        delta = (
            "—"
            if row["variant"] == BASELINE
            else f"{row['paired_delta_us']:+.1f} [{row['paired_delta_min_us']:+.1f}, "
            f"{row['paired_delta_max_us']:+.1f}]"
        )
        lines.append(
            f"| {row['variant']} | {row['median_us']:.1f} | {row['min_us']:.1f} | "
            f"{row['max_us']:.1f} | {row['cpu_median_us']:.1f} | {delta} | "
            f"{row['ratio']:.2f}x | {row['bad']} |"
        )
    lines.append("")
    for b in books:
        lines.append(
            f"- ledger `{b['variant']}`: recorded {b['recorded']} = written {b['written']} "
            f"+ duplicates {b['duplicates']} + dropped {b['dropped_total']} {b['dropped'] or ''}"
            f"({b['batches']} batches)"
        )
    return "\n".join(lines) + "\n"


def new_loop() -> tuple[asyncio.AbstractEventLoop, str]:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop(), "asyncio"
    return uvloop.new_event_loop(), f"uvloop {version('uvloop')}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=30, help="round-robin rounds (default 30)")
    ap.add_argument("--batch", type=int, default=2000, help="requests per batch (default 2000)")
    ap.add_argument("--warmup", type=int, default=2000, help="warm-up requests per variant")
    ap.add_argument("--quick", action="store_true", help="smoke run: 4 rounds x 500 requests")
    ap.add_argument("--md", type=Path, help="also write the markdown table here")
    ap.add_argument("--json", type=Path, help="write raw results here")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.batch, args.warmup = 4, 500, 500
    total = args.warmup + args.rounds * args.batch

    loop, loop_name = new_loop()
    print(f"event loop: {loop_name}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="asgimon-bench-") as tmp:
        variants = build_variants(Path(tmp), total)
        started = time.monotonic()
        try:
            loop.run_until_complete(run(variants, args.rounds, args.batch, args.warmup))
        finally:
            loop.close()
        elapsed = time.monotonic() - started
    rows = summarise(variants)
    books = ledger(variants, total)
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": len(os.sched_getaffinity(0)),
        "loop": loop_name,
        "starlette": version("starlette"),
        "asgimon": version("asgimon"),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "rounds": args.rounds,
        "batch": args.batch,
        "warmup": args.warmup,
        "seconds": round(elapsed, 1),
    }
    md = render_md(env, rows, books)
    print(md)
    for b in books:
        print(f"{b['variant']}: written={b['written']} dropped={b['dropped_total']}")
    if args.md:
        args.md.write_text(md)
    if args.json:
        args.json.write_text(json.dumps({"env": env, "rows": rows, "ledger": books}, indent=2))


if __name__ == "__main__":
    main()
