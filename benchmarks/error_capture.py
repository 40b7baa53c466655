"""The cost of one captured exception: asgimon beside Sentry's SDK (errors only), same run.

Each round raises an exception through a stack of 5, then 40 frames and captures it:
asgimon's ``capture_unhandled`` (what the middleware calls, with a request's scope: 12
headers, a query string) and ``capture_exception``; Sentry's ``capture_exception`` (its SDK
with no integration, no tracing, with and without its default local variables, and a
transport that drops the envelope, so neither side's background work is counted: asgimon's
writer and Sentry's HTTP thread both run off the request). The baseline raises and catches
alone.
Rounds are interleaved; the figures are medians of the rounds, per capture, in µs.

    .venv/bin/python benchmarks/error_capture.py [--rounds 7] [--captures 2000] [--md PATH]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sentry_sdk
from sentry_sdk.transport import Transport

from asgimon import MemoryStorage, Monitor, Settings


class Discard(Transport):
    def capture_envelope(self, envelope: Any) -> None:
        return None


SCOPE: dict[str, Any] = {
    "type": "http",
    "method": "POST",
    "path": "/orders/41/pay",
    "root_path": "",
    "query_string": b"currency=eur&coupon=WINTER&session_token=abc123secret",
    "headers": [
        (b"host", b"shop.example"),
        (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0"),
        (b"accept", b"application/json"),
        (b"accept-language", b"en-GB,en;q=0.9"),
        (b"accept-encoding", b"gzip, br"),
        (b"content-type", b"application/json"),
        (b"content-length", b"512"),
        (b"authorization", b"Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbm4ifQ.sig"),
        (b"cookie", b"session=9f1c2e77aa; theme=dark"),
        (b"x-request-id", b"req-8f3a2"),
        (b"x-forwarded-for", b"203.0.113.7"),
        (b"referer", b"https://shop.example/cart"),
    ],
}


def _without_locals() -> dict[str, Any]:
    """The SDK's option that leaves frame variables out: renamed in its version 3."""
    if int(sentry_sdk.VERSION.split(".")[0]) >= 3:
        return {"data_collection": {"stack_frame_variables": False}}
    return {"include_local_variables": False}


def nested(depth: int, order_id: int) -> None:
    if depth <= 1:
        raise ValueError(f"payment for order {order_id} declined by the bank")
    nested(depth - 1, order_id)


def timed(capture: Callable[[BaseException], object], captures: int, depth: int) -> float:
    gc.collect()
    t0 = time.perf_counter()
    for i in range(captures):
        try:
            nested(depth, i)
        except ValueError as exc:
            capture(exc)
    return (time.perf_counter() - t0) / captures * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--captures", type=int, default=2000)
    ap.add_argument("--md", type=Path)
    args = ap.parse_args()
    sys.setrecursionlimit(10_000)

    big = Settings(queue_max_events=10**7, queue_max_bytes=2**40)
    monitor = Monitor(big, storage=MemoryStorage())
    with_locals = Monitor(big, storage=MemoryStorage(), error_include_locals=True)
    options: dict[str, Any] = {
        "dsn": "http://0123456789abcdef0123456789abcdef@127.0.0.1:9/1",
        "transport": Discard,
        "default_integrations": False,
        "auto_enabling_integrations": False,
        "traces_sample_rate": None,
    }
    sentry = sentry_sdk.Client(**options)
    sentry_no_locals = sentry_sdk.Client(**options, **_without_locals())

    def in_sentry(client: sentry_sdk.Client) -> Callable[[BaseException], object]:
        def capture(exc: BaseException) -> object:
            return sentry_sdk.capture_exception(exc)  # as an app calls it, its client global

        capture.client = client  # type: ignore[attr-defined]
        return capture

    variants: dict[str, Callable[[BaseException], object]] = {
        "raise and catch alone": lambda exc: None,
        "asgimon, unhandled in a request": lambda exc: monitor.capture_unhandled(exc, SCOPE),
        "asgimon, capture_exception": monitor.capture_exception,
        "asgimon, capture_exception with local variables": with_locals.capture_exception,
        "Sentry SDK, capture_exception (local variables, its default)": in_sentry(sentry),
        "Sentry SDK, capture_exception without local variables": in_sentry(sentry_no_locals),
    }
    rows = []
    for depth in (5, 40):
        per: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, capture in variants.items():
                client = getattr(capture, "client", None)
                if client is not None:
                    sentry_sdk.get_global_scope().set_client(client)
                per[name].append(timed(capture, args.captures, depth))
        base = statistics.median(per["raise and catch alone"])
        for name, values in per.items():
            med = statistics.median(values)
            rows.append((depth, name, med, med - base))
    asgimon = {d: c for d, n, _, c in rows if n == "asgimon, unhandled in a request"}
    sentry_cost = {
        d: c
        for d, n, _, c in rows
        if n == "Sentry SDK, capture_exception (local variables, its default)"
    }
    lines = [
        f"| stack depth | variant | µs per capture (median of {args.rounds}) | capture alone, µs |",
        "|---:|---|---:|---:|",
        *(f"| {d} | {n} | {m:.1f} | {c:.1f} |" for d, n, m, c in rows),
        "",
        "asgimon's unhandled capture against Sentry's: "
        + ", ".join(f"{asgimon[d] / sentry_cost[d]:.2f} times at depth {d}" for d in asgimon),
    ]
    md = "\n".join(lines)
    print(md)
    if args.md:
        args.md.write_text(md + "\n")


if __name__ == "__main__":
    main()
