"""Operators' commands: check the settings and storage, upgrade or compact the database,
purge what retention no longer keeps, forget a user."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any

from asgimon.monitor import Monitor

if TYPE_CHECKING:
    from . import Subcommands


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


async def _check(monitor: Monitor) -> int:
    # Storage only: starting the monitor would start its periodic jobs (a purge) too.
    try:
        await monitor.storage.start()
    except Exception as exc:
        monitor.storage_error = str(exc)[:500]
    try:
        health = await monitor.health()
    finally:
        await monitor.storage.close()
    _print({"settings": "ok", "storageUrl": monitor.settings.storage_url, **health})
    storage = health["storage"]
    if storage.get("ok") and not storage.get("startError"):
        return 0
    problem = storage.get("startError") or storage.get("error") or "not ready"
    print("asgimon: storage: " + " ".join(str(problem).split()), file=sys.stderr)
    return 1


async def _upgrade(monitor: Monitor) -> int:
    upgrade = getattr(monitor.storage, "upgrade", None)
    if upgrade is None:
        _print({"upgraded": [], "note": "this storage keeps no schema"})
        return 0
    try:
        applied = await upgrade()
    finally:
        await monitor.storage.close()
    _print({"upgraded": applied})
    return 0


async def _compact(monitor: Monitor) -> int:
    try:
        await monitor.storage.start()
        packed = await monitor.compact()
    finally:
        await monitor.storage.close()
    _print({"packed": packed})
    return 0


async def _purge(monitor: Monitor) -> int:
    try:
        await monitor.storage.start()
        deleted = await monitor.purge()
    finally:
        await monitor.storage.close()
    _print({"deleted": deleted})
    return 0


async def _forget(monitor: Monitor, user: str) -> int:
    try:
        await monitor.storage.start()
        deleted = await monitor.forget_user(user)
    finally:
        await monitor.storage.close()
    _print({"user": user, "deleted": deleted})
    return 0


def check(args: argparse.Namespace) -> int:
    return asyncio.run(_check(Monitor.from_env()))


def db(args: argparse.Namespace) -> int:
    monitor = Monitor.from_env()
    return asyncio.run(_upgrade(monitor) if args.action == "upgrade" else _compact(monitor))


def purge(args: argparse.Namespace) -> int:
    return asyncio.run(_purge(Monitor.from_env()))


def forget(args: argparse.Namespace) -> int:
    return asyncio.run(_forget(Monitor.from_env(), args.user))


def add(commands: Subcommands) -> None:
    found = commands.add_parser(
        "check",
        help="validate the settings from the environment, reach storage",
        description="Validate the settings, reach storage and print the health as JSON;"
        " exit 1 if storage is not ready.",
    )
    found.set_defaults(run=check)
    found = commands.add_parser(
        "db",
        help="database schema: upgrade it, or compact closed buckets",
        description="upgrade: bring the database schema to this version."
        " compact: pack closed buckets' histograms now (e.g. after a bulk load).",
    )
    found.add_argument("action", choices=["upgrade", "compact"])
    found.set_defaults(run=db)
    found = commands.add_parser(
        "purge",
        help="delete what retention no longer keeps",
        description="Delete now what the retention settings no longer keep.",
    )
    found.set_defaults(run=purge)
    found = commands.add_parser(
        "forget",
        help="delete every record carrying a user id",
        description="Delete every record carrying a user id (erasure on request).",
    )
    found.add_argument("--user", required=True, help="the user id to erase")
    found.set_defaults(run=forget)
