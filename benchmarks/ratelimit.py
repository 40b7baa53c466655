"""The host app's rate limiter, per request, in process: beside slowapi, same run.

A bare Starlette app answers ``GET /items/{id}``; each variant wraps it with one rate
limiter whose limit is never reached (a million per minute: every request pays the check
and is let through), keyed by the client address: a new client each request (25,000 in
turn), or with ``--clients 1`` one client for every request. Variants are interleaved per
round; the figure is the median round's µs per request above the bare app's in the same
round. The fixed window is measured with each ``RATE_LIMIT_HEADERS`` mode: the IETF pair
(the default), all five headers, none.

    .venv/bin/python benchmarks/ratelimit.py [--rounds 15] [--batch 2000] [--clients N] \
        [--redis URL]

slowapi (0.1.9+) is measured as its pure-ASGI ``SlowAPIASGIMiddleware`` with a default limit,
the way its documentation applies one limit to every route, on its memory storage.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

sys.path.insert(0, str(Path(__file__).parent))
from overhead import Cycle, scope_template

from asgimon.ratelimit.limiter import RateLimiter
from asgimon.ratelimit.middleware import RateLimitMiddleware
from asgimon.ratelimit.policy import Policy, default_rule

LIMIT = 1_000_000


async def item(request: Request) -> JSONResponse:
    return JSONResponse({"id": request.path_params["id"]})


def bare() -> Starlette:
    return Starlette(routes=[Route("/items/{id}", item)])


def asgimon_variant(
    strategy: str, burst: int, redis: str | None = None, headers: str = "ietf"
) -> ASGIApp:
    limiter = RateLimiter("1/second", strategy=strategy, redis_url=redis, key_prefix="bench")
    policy = Policy(default_rule(LIMIT, 60, burst), (), ())
    return RateLimitMiddleware(bare(), limiter=limiter, policy=policy, headers=headers)


def slowapi_variant() -> ASGIApp:
    from slowapi import Limiter
    from slowapi.middleware import SlowAPIASGIMiddleware
    from slowapi.util import get_remote_address

    app = bare()
    app.state.limiter = Limiter(
        key_func=get_remote_address, default_limits=[f"{LIMIT}/minute"], headers_enabled=True
    )
    app.add_middleware(SlowAPIASGIMiddleware)
    return app


async def drive(app: ASGIApp, n: int, offset: int, clients: int = 25_000) -> None:
    for i in range(n):
        scope = scope_template(f"/items/{i % 50}")
        j = (offset + i) % clients
        scope["client"] = (f"10.0.{j // 100 % 250}.{j % 100}", 5000)
        cycle = Cycle()
        await app(scope, cycle.receive, cycle.send)
        if cycle.status != 200:
            raise RuntimeError(f"status {cycle.status}")
        await asyncio.sleep(0)


async def main(args: argparse.Namespace) -> None:
    variants: dict[str, Callable[[], ASGIApp]] = {
        "bare Starlette": bare,
        "asgimon, memory, fixed window": lambda: asgimon_variant("fixed-window", 0),
        "asgimon, memory, fixed window with burst (2 limits)": lambda: asgimon_variant(
            "fixed-window", 10
        ),
        "… all five headers (RATE_LIMIT_HEADERS=all)": lambda: asgimon_variant(
            "fixed-window", 10, headers="all"
        ),
        "… no header (RATE_LIMIT_HEADERS=none)": lambda: asgimon_variant(
            "fixed-window", 10, headers="none"
        ),
        "asgimon, memory, sliding window counter": lambda: asgimon_variant(
            "sliding-window-counter", 0
        ),
        "asgimon, memory, moving window": lambda: asgimon_variant("moving-window", 0),
        "slowapi, memory, SlowAPIASGIMiddleware": slowapi_variant,
    }
    if args.redis:
        variants["asgimon, Redis, fixed window"] = lambda: asgimon_variant(
            "fixed-window", 0, args.redis
        )
        variants["asgimon, Redis, sliding window counter with burst"] = lambda: asgimon_variant(
            "sliding-window-counter", 10, args.redis
        )
    apps = {name: make() for name, make in variants.items()}
    for app in apps.values():
        await drive(app, 200, 0, args.clients)  # warm up
    per: dict[str, list[float]] = {name: [] for name in apps}
    for r in range(args.rounds):
        names = list(apps)
        names = names[r % len(names) :] + names[: r % len(names)]
        for name in names:
            t0 = time.perf_counter()
            await drive(apps[name], args.batch, r * args.batch, args.clients)
            per[name].append((time.perf_counter() - t0) / args.batch * 1e6)
    base = per["bare Starlette"]
    lines = [
        f"| variant | µs per request (median of {args.rounds}) | added over bare, µs |",
        "|---|---:|---:|",
    ]
    for name, values in per.items():
        added = statistics.median(v - b for v, b in zip(values, base, strict=True))
        lines.append(f"| {name} | {statistics.median(values):.1f} | {added:+.1f} |")
    print("\n".join(lines))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=25_000, help="distinct client addresses")
    ap.add_argument("--redis", default=None, help="also a Redis variant at this URL")
    asyncio.run(main(ap.parse_args()))
