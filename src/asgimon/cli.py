"""The ``asgimon`` command, for operators: settings come from the same environment as the app.

asgimon check                  validate the settings, reach storage, print the health
asgimon db upgrade             bring the database schema to this version
asgimon db compact             pack closed buckets' histograms now (e.g. after a bulk load)
asgimon purge                  delete what retention no longer keeps, now
asgimon forget --user ID       delete every record carrying a user id
asgimon export --kind K ...    write the raw events of a time range as CSV or JSON
asgimon demo                   serve a demo app with synthetic traffic and the dashboard

Exit status: 0 done, 1 the work failed (storage down, for instance), 2 a bad argument or
setting. ``asgimon COMMAND --help`` tells each command's arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from asgimon._commands import demo, export, operations
from asgimon.errors import AsgimonError


def _version() -> str:
    try:
        return version("asgimon")
    except PackageNotFoundError:  # a source tree on sys.path, not installed
        return "unknown"


def _fail(exc: BaseException, status: int) -> int:
    # One line, whatever the driver's message held (SQLAlchemy's run over several).
    print("asgimon: " + " ".join(str(exc).split())[:1000], file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="asgimon", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (operations, export, demo):
        command.add(commands)
    args = parser.parse_args(argv)
    try:
        status: int = args.run(args)
    except argparse.ArgumentError as exc:
        commands.choices[args.command].error(str(exc))  # exits with 2, after the usage
    except ValueError as exc:  # a setting, or a value only the command could judge
        return _fail(exc, 2)
    except BrokenPipeError:
        # The reader went away (`asgimon export ... | head`): nothing to say, and nothing
        # left to flush at exit, or Python would complain of the closed pipe itself.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (AsgimonError, OSError) as exc:
        return _fail(exc, 1)
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    raise SystemExit(main())
