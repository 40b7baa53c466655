"""The ``asgimon`` command: ``asgimon check`` validates settings and reaches storage."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from asgimon.errors import AsgimonError
from asgimon.monitor import Monitor


async def _check() -> int:
    monitor = Monitor.from_env()
    async with monitor:
        health = await monitor.health()
    print(
        json.dumps(
            {"settings": "ok", "storageUrl": monitor.settings.storage_url, **health}, indent=2
        )
    )
    return 0 if health["storage"].get("ok") else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="asgimon", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="validate the settings from the environment, reach storage")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            return asyncio.run(_check())
    except AsgimonError as exc:
        print(f"asgimon: {exc}", file=sys.stderr)
        return 2
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    raise SystemExit(main())
