"""The dashboard's pages at ten million API calls: server time per page, and the overview's
first contentful paint in Chromium.

Reuses the SQLite store that ``benchmarks/query.py --reuse --backends sqlite`` loads and
keeps (10,000,000 API calls and 1,000,000 other events over 90 days). Each page is asked
for ``range=30d`` through the mounted app in process, ``--requests`` rounds: *cold* right
after the analytics cache is cleared, *warm* repeated at once (server time: the page's
reads, its figures and its template). Then a real uvicorn, in its own process and with no
analytics cache, serves the same store and Debian's Chromium opens the overview
``--fcp-rounds`` times, each in a fresh context, and reads the first contentful paint from
the Paint Timing API, beside a one-line page served by the same process; with it the
overview's first and last byte and its largest contentful paint.

    .venv/bin/python benchmarks/query.py --reuse --backends sqlite   # once: loads, keeps
    .venv/bin/python benchmarks/pages.py [--requests 40] [--fcp-rounds 20] [--md PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from asgimon import Monitor
from asgimon.storage.sql import SQLStorage

PROJECT = "bench"
SERVER_TARGET_MS = 100.0
FCP_TARGET_MS = 300.0
CHROMIUM = "/usr/bin/chromium"
BLANK = "<!doctype html><html lang=en><title>blank</title><p>one line</p>"
# Largest-contentful-paint entries are only observed, never listed: the buffered ones.
LARGEST_PAINT = (
    "new Promise(done => new PerformanceObserver(l => done(l.getEntries().at(-1).startTime))"
    ".observe({type: 'largest-contentful-paint', buffered: true}))"
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


async def page_paths(client: httpx.AsyncClient, range_: str) -> list[tuple[str, str]]:
    q = f"project={PROJECT}&range={range_}"
    errors = (await client.get(f"/analytics/api/errors/{PROJECT}?range={range_}")).json()
    perf = (await client.get(f"/analytics/api/performance/{PROJECT}?range={range_}")).json()
    group = quote(errors["groups"][0]["fingerprint"])
    top = perf["endpoints"][0]
    endpoint = f"method={top['method']}&endpoint={quote(top['endpoint'])}"
    return [
        ("overview", f"/analytics/?{q}"),
        ("deployments", f"/analytics/deployments?{q}"),
        ("functions", f"/analytics/functions?{q}"),
        ("builds", f"/analytics/builds?{q}"),
        ("errors", f"/analytics/errors?{q}"),
        ("error group", f"/analytics/errors/{group}?{q}"),
        ("performance", f"/analytics/performance?{q}"),
        ("endpoint", f"/analytics/performance/endpoint?{q}&{endpoint}"),
    ]


async def server_times(url: str, rounds: int, range_: str) -> list[dict[str, Any]]:
    storage = SQLStorage(url)
    monitor = Monitor(storage=storage, api_rate_limit=None)
    app = monitor.wrap(Starlette())
    cache = monitor.dashboard.api.cache
    await storage.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 1)),
            base_url="http://localhost",
            timeout=60,
        ) as client:
            paths = await page_paths(client, range_)
            cold: dict[str, list[float]] = {n: [] for n, _ in paths}
            warm: dict[str, list[float]] = {n: [] for n, _ in paths}
            sizes: dict[str, int] = {}
            for rnd in range(rounds + 1):  # round 0 is untimed
                for name, path in paths:
                    cache.clear()
                    for into in (cold, warm):
                        t = time.perf_counter()
                        r = await client.get(path)
                        ms = (time.perf_counter() - t) * 1000
                        if r.status_code != 200:
                            raise RuntimeError(f"{path}: {r.status_code} {r.text[:300]}")
                        if rnd:
                            into[name].append(ms)
                        sizes[name] = len(r.content)
    finally:
        await monitor.dashboard.aclose()
        await storage.close()
    return [
        {
            "page": name,
            "bytes": sizes[name],
            "cold_median_ms": statistics.median(cold[name]),
            "cold_p95_ms": percentile(cold[name], 0.95),
            "warm_median_ms": statistics.median(warm[name]),
            "warm_p95_ms": percentile(warm[name], 0.95),
            "target_met": percentile(cold[name], 0.95) < SERVER_TARGET_MS,
        }
        for name, _ in paths
    ]


def serve(url: str, port: int) -> None:
    """The server, in its own process as in production: the browser's driver shares no GIL
    with it. No analytics cache (every page is cold), and its own requests unrecorded (the
    store stays what query.py loaded); a one-line page beside the dashboard is the
    browser's own floor in the same run."""
    monitor = Monitor(
        storage=SQLStorage(url), api_rate_limit=None, enabled=False, local_cache_ttl=0
    )
    host = Starlette(routes=[Route("/blank", lambda _: HTMLResponse(BLANK))])
    uvicorn.run(monitor.wrap(host), host="127.0.0.1", port=port, log_level="warning")


def first_paints(url: str, rounds: int, range_: str) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(url, port))
    server.start()
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/blank", timeout=1)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline or not server.is_alive():
                raise RuntimeError("the page server did not start") from None
            time.sleep(0.1)
    urls = {
        "overview": f"http://127.0.0.1:{port}/analytics/?project={PROJECT}&range={range_}",
        "blank": f"http://127.0.0.1:{port}/blank",
    }

    paints: dict[str, list[float]] = {name: [] for name in urls}
    loads: list[float] = []
    # The overview is streamed: its first byte, its last, and its largest contentful paint
    # (the key figures or a table, which come after the header that makes the first).
    first_bytes: list[float] = []
    last_bytes: list[float] = []
    largest: list[float] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                ],
            )
            for rnd in range(rounds + 1):
                for name, url in urls.items():
                    context = browser.new_context(viewport={"width": 1440, "height": 900})
                    page = context.new_page()
                    page.goto(url, wait_until="load")
                    # The paint entry can land just after the load event. (Polled from here:
                    # the page's CSP forbids wait_for_function's string evaluation.)
                    fcp = None
                    for _ in range(200):
                        fcp = page.evaluate(
                            "performance.getEntriesByName('first-contentful-paint')[0]?.startTime"
                        )
                        if fcp is not None:
                            break
                        time.sleep(0.01)
                    nav = page.evaluate(
                        "(({loadEventEnd, responseStart, responseEnd}) =>"
                        " ({loadEventEnd, responseStart, responseEnd}))"
                        "(performance.getEntriesByType('navigation')[0])"
                    )
                    lcp = page.evaluate(LARGEST_PAINT)
                    context.close()
                    if fcp is None:
                        raise RuntimeError(f"{url}: no first contentful paint within 2 s")
                    if rnd:
                        paints[name].append(float(fcp))
                        if name == "overview":
                            loads.append(float(nav["loadEventEnd"]))
                            first_bytes.append(float(nav["responseStart"]))
                            last_bytes.append(float(nav["responseEnd"]))
                            largest.append(float(lcp))
            browser.close()
    finally:
        server.terminate()
        server.join(timeout=30)
    return {
        "rounds": rounds,
        "fcp_median_ms": statistics.median(paints["overview"]),
        "fcp_p75_ms": percentile(paints["overview"], 0.75),
        "fcp_p95_ms": percentile(paints["overview"], 0.95),
        "blank_fcp_median_ms": statistics.median(paints["blank"]),
        "blank_fcp_p75_ms": percentile(paints["blank"], 0.75),
        "blank_fcp_p95_ms": percentile(paints["blank"], 0.95),
        "load_median_ms": statistics.median(loads),
        "first_byte_median_ms": statistics.median(first_bytes),
        "last_byte_median_ms": statistics.median(last_bytes),
        "last_byte_p95_ms": percentile(last_bytes, 0.95),
        "lcp_median_ms": statistics.median(largest),
        "lcp_p75_ms": percentile(largest, 0.75),
        "lcp_p95_ms": percentile(largest, 0.95),
        "target_met": percentile(paints["overview"], 0.95) < FCP_TARGET_MS,
    }


def render_md(rows: list[dict[str, Any]], fcp: dict[str, Any]) -> str:
    out = [
        "| page | cold median ms | cold p95 ms | warm median ms | warm p95 ms | bytes "
        "| p95 cold < 100 ms |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['page']} | {r['cold_median_ms']:.1f} | {r['cold_p95_ms']:.1f} | "
            f"{r['warm_median_ms']:.1f} | {r['warm_p95_ms']:.1f} | {r['bytes']:,} | "
            f"{'yes' if r['target_met'] else 'no'} |"
        )
    out += [
        "",
        "| overview in Chromium, cache cold | median ms | p75 ms | p95 ms |",
        "|---|---:|---:|---:|",
        f"| first contentful paint ({fcp['rounds']} loads) | {fcp['fcp_median_ms']:.0f} | "
        f"{fcp['fcp_p75_ms']:.0f} | {fcp['fcp_p95_ms']:.0f} |",
        f"| first byte of the overview | {fcp['first_byte_median_ms']:.0f} | | |",
        f"| last byte of the overview | {fcp['last_byte_median_ms']:.0f} | | "
        f"{fcp['last_byte_p95_ms']:.0f} |",
        f"| largest contentful paint | {fcp['lcp_median_ms']:.0f} | {fcp['lcp_p75_ms']:.0f} | "
        f"{fcp['lcp_p95_ms']:.0f} |",
        f"| load event | {fcp['load_median_ms']:.0f} | | |",
        f"| a one-line page, first contentful paint | {fcp['blank_fcp_median_ms']:.0f} | "
        f"{fcp['blank_fcp_p75_ms']:.0f} | {fcp['blank_fcp_p95_ms']:.0f} |",
    ]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--sqlite-path", type=Path, default=Path("/tmp/asgimon-bench-query.db"))
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--fcp-rounds", type=int, default=20)
    ap.add_argument("--range", default="30d")
    ap.add_argument("--md", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not args.sqlite_path.exists():
        sys.exit(
            f"{args.sqlite_path} is missing: run benchmarks/query.py --reuse --backends sqlite"
        )
    url = f"sqlite:///{args.sqlite_path}"
    rows = asyncio.run(server_times(url, args.requests, args.range))
    fcp = first_paints(url, args.fcp_rounds, args.range)
    md = render_md(rows, fcp)
    print(md)
    if args.md:
        args.md.write_text(md)
    if args.json:
        args.json.write_text(json.dumps({"pages": rows, "fcp": fcp}, indent=2))


if __name__ == "__main__":
    main()
