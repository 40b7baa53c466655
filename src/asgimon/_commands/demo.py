"""``asgimon demo``: a small app with synthetic traffic and a week of history, monitored,
with the dashboard's address printed first (what ``make demo`` runs)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from typing import TYPE_CHECKING

from asgimon.errors import AsgimonError, ConfigError

if TYPE_CHECKING:
    from . import Subcommands

DEFAULT_PORT = 8000
SERVING_EXTRAS = ("uvicorn", "httpx")


def _port(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit() and int(raw) <= 65535):
        raise argparse.ArgumentTypeError(f"{raw!r} is not a port from 0 to 65535 (0: any free one)")
    return int(raw)


def _seconds(raw: str) -> float:
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number of seconds above 0")
    return seconds


def run(args: argparse.Namespace) -> int:
    port: int | None = args.port
    if port is None:
        raw = os.environ.get("DEMO_PORT", str(DEFAULT_PORT))
        try:
            port = _port(raw)
        except argparse.ArgumentTypeError:
            raise ConfigError("DEMO_PORT", raw, "a port from 0 to 65535") from None
    try:
        # Imported here: the other commands run without the demo's extra installed.
        from asgimon.demo import serve
    except ModuleNotFoundError as exc:
        if exc.name not in SERVING_EXTRAS:
            raise
        raise AsgimonError(f"the demo needs {exc.name}: pip install 'asgimon[demo]'") from None
    # Ctrl-C is how the demo is meant to stop: a success, with no traceback.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, port, args.duration))
    return 0


def add(commands: Subcommands) -> None:
    found = commands.add_parser(
        "demo",
        help="serve a demo app with synthetic traffic, monitored, and its dashboard",
        description=__doc__ + "\nStorage is ANALYTICS_STORAGE_URL, by default"
        " sqlite:///asgimon-demo.db in the current directory; history is written into it"
        " only while it is empty.",
    )
    found.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    found.add_argument(
        "--port",
        type=_port,
        help=f"port to listen on, 0 for any free one (DEMO_PORT or {DEFAULT_PORT})",
    )
    found.add_argument(
        "--duration",
        type=_seconds,
        metavar="SECONDS",
        help="stop after this long (default: Ctrl-C)",
    )
    found.set_defaults(run=run)
