"""A page sent in parts: its head, header and title at once, then each panel as soon as the
figures it shows are read, so that the first screen paints while the rest is computed.

Whatever can refuse the request (the project, the range, the filters, the caller's right
to see the project) is checked before the first byte, so a bad request still gets its 4xx
page. Once the status is sent, a panel whose figures cannot be read, or whose template
fails, is replaced by a message saying so: logged, never a traceback, never a page that
stops halfway without a word.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment
from markupsafe import Markup

from asgimon.errors import StorageError

log = logging.getLogger("asgimon.dashboard")

# Where the panels go in the rendered shell. Autoescaped text cannot contain "<!--", so
# nothing a client sent can forge it.
SLOT = Markup("<!--asgimon:panels-->")
UNAVAILABLE = "_unavailable.html"


@dataclass(frozen=True)
class Panel:
    """One part of a streamed page: its template, and the figures (by name) it shows."""

    template: str
    needs: tuple[str, ...]
    title: str  # of the message shown in its place when it cannot be shown


def shell(env: Environment, template: str, values: Mapping[str, Any]) -> tuple[str, str]:
    """The page's template rendered around :data:`SLOT`: what comes before the panels, and
    what comes after them."""
    html = env.get_template(template).render(**values, panels=SLOT)
    top, found, bottom = html.partition(SLOT)
    if not found or SLOT in bottom:
        raise ValueError(f"{template} must render the panels' slot exactly once")
    return top, bottom


async def stream(
    env: Environment,
    parts: tuple[str, str],
    panels: tuple[Panel, ...],
    values: Mapping[str, Any],
    figures: Mapping[str, asyncio.Future[Any]],
) -> AsyncIterator[str]:
    """The shell's top, each panel in order as its figures are ready, the shell's bottom.

    ``figures`` are already running, so that the reads overlap the first bytes' trip."""
    top, bottom = parts
    try:
        yield top
        for panel in panels:
            yield await _panel(env, panel, values, figures) + "\n"
        yield bottom
    finally:
        settle(figures.values())


async def _panel(
    env: Environment,
    panel: Panel,
    values: Mapping[str, Any],
    figures: Mapping[str, asyncio.Future[Any]],
) -> str:
    try:
        shown = {name: await figures[name] for name in panel.needs}
        return env.get_template(panel.template).render(**values, **shown)
    except StorageError as exc:
        log.warning("asgimon: a page's panel %r could not be read: %s", panel.title, exc)
        message = "Storage is unavailable; reload the page to retry."
    except Exception:
        # The status is already sent: the panel says what is missing, the log says why.
        log.exception("asgimon: a page's panel %r could not be shown", panel.title)
        message = "This panel could not be shown; the server's log says why."
    return env.get_template(UNAVAILABLE).render(title=panel.title, message=message)


def settle(futures: Any) -> None:
    """Cancels the reads no panel waited for (the client went away) and retrieves the
    failures of those that ended, which asyncio would otherwise log as never retrieved."""
    for future in futures:
        if not future.done():
            future.cancel()
        elif not future.cancelled():
            future.exception()
