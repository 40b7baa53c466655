"""``asgimon export``: the raw events of one kind and time range, as CSV or JSON.

The rows are the API's (``GET {mount}/api/events/{project}?format=csv&table=events``): the
same wire form, the same columns, the same guard against spreadsheet formulas. They are
read and written a page at a time, so a month of a busy project never sits in memory.
A range holds exactly the instants asked for, ``start <= t < end``: the API widens its
ranges to whole hours or days for the rollups' sake, and raw events need not be.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from asgimon._validate import MAX_PROJECT_ID, Checker
from asgimon.analytics.ranges import RANGES, BadQuery, instant_param
from asgimon.dashboard.export import to_csv
from asgimon.dashboard.wire import event
from asgimon.errors import AsgimonError
from asgimon.events import EVENT_TYPES, Event
from asgimon.monitor import Monitor
from asgimon.storage.base import EventStore

if TYPE_CHECKING:
    from . import Subcommands

PAGE = 1000
TICK = 1e-6
"""The finest time SQL storage keeps (microseconds): ``[t, t + TICK)`` holds the instant t."""
CRLF = "\r\n"


async def _at(storage: EventStore, kind: str, project: str, at: float) -> list[Event]:
    # Every event at one instant, however many share it.
    limit = PAGE
    while True:
        found = await storage.events(kind, project_id=project, start=at, end=at + TICK, limit=limit)
        if len(found) < limit:
            # Stores keeping finer times answer later ones too: those are in the page.
            return [ev for ev in found if ev.timestamp <= at]
        limit *= 4


async def pages(
    storage: EventStore, kind: str, project: str, start: float, end: float
) -> AsyncIterator[list[Event]]:
    """Every event of ``[start, end)``, newest first, about :data:`PAGE` at a time."""
    while True:
        page = await storage.events(kind, project_id=project, start=start, end=end, limit=PAGE)
        if len(page) < PAGE:
            if page:
                yield page
            return
        # The next page ends where this one did, at its oldest instant. Events sharing that
        # instant may straddle the two pages: read them all here, and none there.
        oldest = page[-1].timestamp
        yield [ev for ev in page if ev.timestamp > oldest] + await _at(
            storage, kind, project, oldest
        )
        end = oldest


def csv_header(kind: str) -> str:
    """The columns of a kind's rows: those of any event of it, such as its defaults."""
    return to_csv([event(EVENT_TYPES[kind]())]).partition(CRLF)[0]


async def export(
    storage: EventStore,
    kind: str,
    projects: list[str],
    start: float,
    end: float,
    *,
    fmt: str,
    out: TextIO,
) -> int:
    """Write the events of ``projects`` (in turn, each newest first) to ``out``; their number.

    CSV has one header line; JSON is one array with an event a line.
    """
    header = csv_header(kind)
    out.write(header + CRLF if fmt == "csv" else "[")
    written, sep = 0, "\n"
    for project in projects:
        async for page in pages(storage, kind, project, start, end):
            rows = [event(ev) for ev in page]
            if fmt == "csv":
                head, _, body = to_csv(rows).partition(CRLF)
                if head != header:
                    raise AsgimonError(f"{kind} events have columns of their own: use JSON")
                out.write(body)
            else:
                for row in rows:
                    # As the API's JSON responses are written.
                    out.write(sep + json.dumps(row, ensure_ascii=False, separators=(",", ":")))
                    sep = ",\n"
            written += len(rows)
    if fmt == "json":
        out.write("\n]\n" if written else "]\n")
    return written


@contextlib.contextmanager
def _target(output: str | None) -> Iterator[TextIO]:
    if output is None or output == "-":
        yield sys.stdout
        return
    path = Path(output)
    # Written beside the file and renamed once complete: a failed export leaves no file
    # that looks whole. newline="" keeps CSV's CRLF as it is.
    partial = path.with_name(path.name + ".partial")
    try:
        out = partial.open("w", encoding="utf-8", newline="")
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, output) from None
    try:
        with out:
            yield out
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


async def _run(args: argparse.Namespace, start: float, end: float) -> int:
    storage = Monitor.from_env().storage
    try:
        await storage.start()
        projects = [args.project] if args.project is not None else await storage.projects()
        # One project at a time: each page is then one range of a (project, time) index.
        with _target(args.output) as out:
            written = await export(
                storage, args.kind, projects, start, end, fmt=args.format, out=out
            )
    finally:
        await storage.close()
    if args.output not in (None, "-"):
        print(f"asgimon: {written} {args.kind} events written to {args.output}", file=sys.stderr)
    return 0


def _span(args: argparse.Namespace, now: float) -> tuple[float, float]:
    if args.range is not None:
        if args.end is not None:
            raise argparse.ArgumentError(None, "argument --end: not allowed with --range")
        return now - RANGES[args.range], now
    if args.end is None:
        raise argparse.ArgumentError(None, "argument --end: required with --start")
    if args.end <= args.start:
        raise argparse.ArgumentError(None, "argument --end: must be after --start")
    start: float = args.start
    return start, args.end


def run(args: argparse.Namespace) -> int:
    start, end = _span(args, time.time())
    return asyncio.run(_run(args, start, end))


def _instant(raw: str) -> float:
    try:
        return instant_param("time", raw)
    except BadQuery as exc:
        raise argparse.ArgumentTypeError(f"{raw!r} {exc.message}") from None


def _project(raw: str) -> str:
    checker = Checker()
    checker.identifier("project", raw, max_len=MAX_PROJECT_ID)
    if checker.errors:
        raise argparse.ArgumentTypeError(f"{raw!r} {checker.errors[0].message}")
    return raw


def add(commands: Subcommands) -> None:
    found = commands.add_parser(
        "export",
        help="write the raw events of one kind and time range as CSV or JSON",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    found.add_argument("--kind", required=True, choices=tuple(EVENT_TYPES))
    span = found.add_mutually_exclusive_group(required=True)
    span.add_argument("--range", choices=tuple(RANGES), help="the last hour, day, week…")
    span.add_argument(
        "--start", type=_instant, metavar="ISO", help="from (with --end), e.g. 2026-11-27T10:00Z"
    )
    found.add_argument("--end", type=_instant, metavar="ISO", help="until, not included")
    found.add_argument("--project", type=_project, help="one project (default: every project)")
    found.add_argument("--format", choices=("csv", "json"), default="csv")
    found.add_argument("--output", metavar="FILE", help="write there instead of to stdout")
    found.set_defaults(run=run)
