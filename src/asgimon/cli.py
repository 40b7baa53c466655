"""The ``asgimon`` command, for operators: settings come from the same environment as the app.

asgimon check                  validate the settings, reach storage, print the health
asgimon db upgrade             bring the database schema to this version
asgimon db compact             pack closed buckets' histograms now (e.g. after a bulk load)
asgimon purge                  delete what retention no longer keeps, now
asgimon forget --user ID       delete every record carrying a user id
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

from asgimon.errors import AsgimonError
from asgimon.monitor import Monitor


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
    return 0 if storage.get("ok") and not storage.get("startError") else 1


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="asgimon", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="validate the settings from the environment, reach storage")
    db = commands.add_parser("db", help="database schema")
    db.add_argument("action", choices=["upgrade", "compact"])
    commands.add_parser("purge", help="delete what retention no longer keeps")
    forget = commands.add_parser("forget", help="delete every record carrying a user id")
    forget.add_argument("--user", required=True, help="the user id to erase")
    args = parser.parse_args(argv)
    try:
        monitor = Monitor.from_env()
        if args.command == "check":
            return asyncio.run(_check(monitor))
        if args.command == "db":
            return asyncio.run(_upgrade(monitor) if args.action == "upgrade" else _compact(monitor))
        if args.command == "purge":
            return asyncio.run(_purge(monitor))
        return asyncio.run(_forget(monitor, args.user))
    except (AsgimonError, ValueError) as exc:
        print(f"asgimon: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
