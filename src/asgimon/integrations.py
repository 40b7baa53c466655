"""Integrations found through the ``asgimon.integrations`` entry-point group.

An integration's factory is handed the monitor and returns a
:class:`~asgimon.parts.Part` to run beside the others (started after the recorder, closed
before it), or None when the settings leave it off. Loading it is also when a plugin
registers what it brings (an event kind), before storage starts. asgimon's own system
metrics come this way; a third party's the same::

    [project.entry-points."asgimon.integrations"]
    queue-depth = "mypkg.asgimon:integration"      # def integration(monitor) -> Part | None

A plugin that fails to load is logged and left out: it must not stop the host.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from typing import Any

from .parts import Part

log = logging.getLogger("asgimon")

ENTRY_POINT_GROUP = "asgimon.integrations"


def load_integrations(monitor: Any) -> list[Part]:
    parts: list[Part] = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            part = ep.load()(monitor)
        except Exception:
            log.exception("asgimon: integration %r failed to load", ep.name)
            continue
        if part is None:
            continue
        if not isinstance(part, Part):
            log.error("asgimon: integration %r gave no Part", ep.name)
            continue
        parts.append(part)
    return parts
