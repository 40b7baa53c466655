"""The subcommands of ``asgimon``: each module adds its parser and the function it runs.

A command's function returns the exit status. It raises ``argparse.ArgumentError`` for
arguments that are wrong together (exit 2, with the usage), ``ValueError`` for a bad setting
or value (exit 2), and :class:`~asgimon.errors.AsgimonError` or ``OSError`` when the work
itself fails, storage down for instance (exit 1).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    # Generic only to the type checker: argparse's class cannot be subscripted at run time.
    Subcommands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]
