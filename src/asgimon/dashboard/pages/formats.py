"""How figures read on a page: units, percentages, thousands, instants (all text, escaped
by the templates)."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

DASH = "\u2013"  # an en dash: no figure


def count(n: float | None) -> str:
    return DASH if n is None else f"{n:,.0f}"


def ms(value: float | None) -> str:
    """A duration in milliseconds, in the unit that keeps it short."""
    if value is None:
        return DASH
    if value < 10:
        return f"{value:.2f} ms"
    if value < 1000:
        return f"{value:.0f} ms"
    if value < 60_000:
        return f"{value / 1000:.2f} s"
    if value < 3_600_000:
        return f"{value / 60_000:.1f} min"
    return f"{value / 3_600_000:.1f} h"


def pct(rate: float | None) -> str:
    """A rate from 0 to 1 as a percentage."""
    if rate is None:
        return DASH
    if 0 < rate < 0.001:
        return "<0.1 %"
    return f"{rate * 100:.1f} %"


def score(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}"


def per_minute(value: float | None) -> str:
    return DASH if value is None else f"{value:,.2f}/min"


def nbytes(value: float | None) -> str:
    if value is None:
        return DASH
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def when(at: datetime | float | None) -> str:
    """An instant in UTC, to the second."""
    if at is None:
        return DASH
    if not isinstance(at, datetime):
        at = datetime.fromtimestamp(at, UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def segment(text: str) -> str:
    """``text`` as one path segment: "/", "?" and "#" quoted too, so a link built from
    client-chosen text (an error's fingerprint) cannot leave the page it names."""
    return quote(text, safe="")


FILTERS = {
    "count": count,
    "ms": ms,
    "pct": pct,
    "score": score,
    "per_minute": per_minute,
    "nbytes": nbytes,
    "when": when,
    "segment": segment,
}
