"""Charts as inline SVG, drawn on the server: readable without JavaScript, labelled for
screen readers, each with a table of its exact values.

No charting library fits: the ones that draw SVG in Python (pygal, leather) put inline
``<style>`` or script in it, which the pages' Content-Security-Policy refuses. Colours come
from CSS classes (``s0``…``s3``, ``marker``), so the light and dark schemes apply.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from markupsafe import Markup, escape

from .formats import DASH, count, when

Format = Callable[[float | None], str]

WIDTH, HEIGHT = 640, 180
LEFT, RIGHT, TOP, BOTTOM = 56, 8, 10, 22
_ids = itertools.count()


@dataclass(frozen=True, slots=True)
class Line:
    name: str
    values: Sequence[float | None]


@dataclass(frozen=True, slots=True)
class Marker:
    """A vertical line at an instant: a deployment on a time chart."""

    at: datetime
    label: str
    failed: bool = False


@dataclass(frozen=True, slots=True)
class Chart:
    title: str
    svg: Markup
    table: Markup
    empty: bool = False
    legend: tuple[str, ...] = field(default=())


def _nice_top(peak: float) -> float:
    if peak <= 0:
        return 1.0
    step = 10 ** len(str(int(peak))) / 10 if peak >= 1 else 0.1
    for m in (1, 2, 2.5, 5, 10):
        if peak <= m * step:
            return m * step
    return 10 * step


def _svg(title: str, desc: str, body: list[str]) -> Markup:
    n = next(_ids)
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="ct{n} cd{n}">'
        f'<title id="ct{n}">{escape(title)}</title><desc id="cd{n}">{escape(desc)}</desc>'
        + "".join(body)
        + "</svg>"
    )


def _table(caption: str, head: Sequence[str], rows: Sequence[Sequence[str]]) -> Markup:
    cells = "".join(
        "<tr>"
        + "".join(f'<td class="{"num" if i else ""}">{escape(c)}</td>' for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    th = "".join(
        f'<th class="{"num" if i else ""}" scope="col">{escape(h)}</th>' for i, h in enumerate(head)
    )
    return Markup(
        f'<details class="values"><summary>Values of “{escape(caption)}”</summary>'
        f"<table><thead><tr>{th}</tr></thead><tbody>{cells}</tbody></table></details>"
    )


def time_chart(
    title: str,
    times: Sequence[datetime],
    lines: Sequence[Line],
    *,
    fmt: Format = count,
    markers: Sequence[Marker] = (),
    bars: bool = False,
) -> Chart:
    """One or more series over the same buckets (bars for the first series if ``bars``)."""
    values = [v for line in lines for v in line.values if v is not None]
    empty = not values or not any(values)
    top = _nice_top(max(values, default=0.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    n = max(len(times), 1)
    step = plot_w / n

    def x(i: float) -> float:
        return LEFT + step * (i + 0.5)

    def y(v: float) -> float:
        return TOP + plot_h * (1 - v / top)

    body = []
    for frac in (0, 0.5, 1):
        gy = TOP + plot_h * (1 - frac)
        body.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{gy:.1f}" y2="{gy:.1f}"/>'
        )
        body.append(
            f'<text class="axis" x="{LEFT - 4}" y="{gy + 4:.1f}" text-anchor="end">'
            f"{escape(fmt(top * frac))}</text>"
        )
    if times:
        for i in sorted({0, len(times) // 2, len(times) - 1}):
            label = _tick(times[i], times)
            anchor = "start" if i == 0 else "end" if i == len(times) - 1 else "middle"
            tx = LEFT if i == 0 else WIDTH - RIGHT if i == len(times) - 1 else x(i)
            body.append(
                f'<text class="axis" x="{tx:.1f}" y="{HEIGHT - 6}" text-anchor="{anchor}">'
                f"{escape(label)}</text>"
            )
    # One element per series, not one per bar or point: a 30-day chart would otherwise be
    # 60 elements and as many tooltips to style, lay out and paint. The exact values are
    # in the chart's table; the series' tooltip names it and its peak.
    for k, line in enumerate(lines):
        cls = f"s{k % 4}"
        tip = escape(_series_tip(line, times, fmt))
        if bars and k == 0:
            w = max(step * 0.7, 1.0)
            base = TOP + plot_h
            d = "".join(
                f"M{x(i) - w / 2:.1f} {y(v):.1f}h{w:.1f}V{base:.1f}h{-w:.1f}Z"
                for i, v in enumerate(line.values)
                if v
            )
            if d:
                body.append(f'<path class="bar {cls}" d="{d}"><title>{tip}</title></path>')
            continue
        points = [(i, v) for i, v in enumerate(line.values) if v is not None]
        if len(points) > 1:
            path = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in points)
            body.append(f'<polyline class="line {cls}" points="{path}"/>')
        if points:
            # Each point a circle of radius 2.5 drawn as two arcs.
            d = "".join(
                f"M{x(i) - 2.5:.1f} {y(v):.1f}a2.5 2.5 0 1 0 5 0a2.5 2.5 0 1 0-5 0"
                for i, v in points
            )
            body.append(f'<path class="dot {cls}" d="{d}"><title>{tip}</title></path>')
    if times and markers:
        body.extend(_markers(times, markers, step, TOP, TOP + plot_h))
    names = [line.name for line in lines]
    desc = f"{', '.join(names)} per bucket, from {when(times[0]) if times else DASH}"
    if markers:
        desc += f"; {len(markers)} deployment marker(s)"
    rows = [[when(t), *(fmt(line.values[i]) for line in lines)] for i, t in enumerate(times)]
    return Chart(
        title,
        _svg(title, desc, body),
        _table(title, ["time", *names], rows),
        empty,
        tuple(names),
    )


def _series_tip(line: Line, times: Sequence[datetime], fmt: Format) -> str:
    known = [(v, i) for i, v in enumerate(line.values) if v is not None]
    if not known:
        return f"{line.name}: no values; exact values in the table"
    peak, at = max(known, key=lambda vi: vi[0])  # the first bucket at the peak
    return f"{line.name}: peak {fmt(peak)} at {when(times[at])}; exact values in the table"


MARKER_LABELS = 5  # named in one marker's tooltip; the rest are counted


def _markers(
    times: Sequence[datetime], markers: Sequence[Marker], step: float, top: float, bottom: float
) -> list[str]:
    """One line per bucket that saw deployments (red if one failed), where they fell in it,
    its tooltip naming them: a busy month stays readable and light to draw."""
    first = times[0].timestamp()
    width_s = (times[-1].timestamp() - first) / max(len(times) - 1, 1) or 1.0
    slots: dict[int, list[tuple[float, Marker]]] = {}
    for m in markers:
        pos = (m.at.timestamp() - first) / width_s  # in buckets from the first one's start
        if 0 <= pos < len(times):
            slots.setdefault(int(pos), []).append((pos, m))
    out = []
    for _, group in sorted(slots.items()):
        mx = LEFT + step * sum(pos for pos, _ in group) / len(group)
        failed = any(m.failed for _, m in group)
        labels = [m.label for _, m in sorted(group, key=lambda g: g[0])]
        if len(labels) > MARKER_LABELS:
            labels = [*labels[:MARKER_LABELS], f"and {len(labels) - MARKER_LABELS} more"]
        out.append(
            f'<line class="{"marker failed" if failed else "marker"}" x1="{mx:.1f}" '
            f'x2="{mx:.1f}" y1="{top}" y2="{bottom}"><title>{escape("; ".join(labels))}</title>'
            "</line>"
        )
    return out


def _tick(at: datetime, times: Sequence[datetime]) -> str:
    at = at.astimezone(UTC)
    span = (times[-1] - times[0]).total_seconds() if len(times) > 1 else 0
    return at.strftime("%H:%M") if span <= 2 * 86_400 else at.strftime("%b %d")


def bar_list(title: str, rows: Sequence[tuple[str, float | None]], *, fmt: Format = count) -> Chart:
    """Horizontal bars, one per labelled value (a breakdown or a distribution)."""
    top = max((v or 0.0 for _, v in rows), default=0.0) or 1.0
    row_h = 22
    height = max(row_h * len(rows) + 4, row_h)
    label_w, value_w = 180, 90
    plot_w = WIDTH - label_w - value_w
    body = []
    for i, (label, v) in enumerate(rows):
        ty = i * row_h + 15
        w = plot_w * (v or 0.0) / top
        body.append(
            f'<text class="label" x="{label_w - 6}" y="{ty}" text-anchor="end">'
            f"{escape(_clip(label))}</text>"
        )
        body.append(
            f'<rect class="bar s{i % 4 if len(rows) <= 4 else 0}" x="{label_w}" y="{ty - 11}" '
            f'width="{max(w, 0.5):.1f}" height="14"><title>{escape(label)}: '
            f"{escape(fmt(v))}</title></rect>"
        )
        body.append(
            f'<text class="value" x="{WIDTH - 4}" y="{ty}" text-anchor="end">'
            f"{escape(fmt(v))}</text>"
        )
    n = next(_ids)
    svg = Markup(
        f'<svg class="chart bars" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-labelledby="ct{n} cd{n}">'
        f'<title id="ct{n}">{escape(title)}</title>'
        f'<desc id="cd{n}">{escape(", ".join(f"{lbl}: {fmt(v)}" for lbl, v in rows))}</desc>'
        + "".join(body)
        + "</svg>"
    )
    return Chart(
        title,
        svg,
        _table(title, ["", "value"], [[lbl, fmt(v)] for lbl, v in rows]),
        not any(v for _, v in rows),
    )


def _clip(label: str, n: int = 28) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"
