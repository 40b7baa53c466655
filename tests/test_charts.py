"""The server-drawn SVG charts and the page formats: what a reader and a screen reader get."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from xml.etree import ElementTree

import pytest

from asgimon.dashboard.pages.charts import Line, Marker, bar_list, time_chart
from asgimon.dashboard.pages.formats import count, ms, nbytes, pct, when

SVG = "{http://www.w3.org/2000/svg}"
T0 = datetime(2026, 3, 1, tzinfo=UTC)
HOURS = [T0 + timedelta(hours=i) for i in range(24)]


def parse(markup: str) -> ElementTree.Element:
    return ElementTree.fromstring(str(markup).replace("<svg ", f'<svg xmlns="{SVG[1:-1]}" ', 1))


def child(e: ElementTree.Element, tag: str) -> ElementTree.Element:
    found = e.find(SVG + tag)
    assert found is not None, tag
    return found


def num(e: ElementTree.Element, attr: str) -> float:
    return float(e.get(attr) or "nan")


def points(e: ElementTree.Element) -> list[tuple[float, float]]:
    """The start of each subpath of a path: a bar's top left corner, a dot's left edge."""
    return [(float(x), float(y)) for x, y in re.findall(r"M(-?[\d.]+) (-?[\d.]+)", e.get("d", ""))]


def test_a_time_chart_has_a_point_per_bucket_a_title_and_a_table_of_its_values() -> None:
    values = [float(i % 5) for i in range(24)]
    chart = time_chart("Requests", HOURS, [Line("requests", values)])
    svg = parse(chart.svg)
    assert svg.get("role") == "img"
    labelled = svg.get("aria-labelledby", "").split()
    assert [child(svg, "title").get("id"), child(svg, "desc").get("id")] == labelled
    assert child(svg, "title").text == "Requests"
    # One path draws every point of a series; its tooltip names its peak, the table the rest.
    (dots,) = [e for e in svg.findall(f"{SVG}path") if "dot" in e.get("class", "")]
    at = points(dots)
    assert len(at) == 24
    assert child(dots, "title").text == (
        "requests: peak 4 at 2026-03-01 04:00:00 UTC; exact values in the table"
    )
    # Higher values sit higher (smaller y).
    assert at[4][1] < at[1][1] < at[0][1]
    rows = re.findall(r"<tr><td[^>]*>([^<]+)</td><td[^>]*>([^<]+)</td></tr>", str(chart.table))
    assert rows == [(when(t), count(v)) for t, v in zip(HOURS, values, strict=True)]
    assert not chart.empty


def test_a_series_is_one_element_however_many_buckets() -> None:
    # A 30-day chart is drawn in a handful of elements: the first screen styles, lays out
    # and paints three of them.
    days = [T0 + timedelta(days=i) for i in range(90)]
    chart = time_chart(
        "Calls",
        days,
        [Line("calls", [float(i) for i in range(90)]), Line("errors", [1.0] * 90)],
        bars=True,
    )
    svg = parse(chart.svg)
    (bars,) = [e for e in svg.findall(f"{SVG}path") if "bar" in e.get("class", "")]
    assert len(points(bars)) == 89  # the zero bucket has no bar
    assert len(svg.findall(f"{SVG}*")) < 20
    assert str(chart.table).count("<tr>") == 91  # the head and every bucket


def test_bars_markers_and_an_empty_chart() -> None:
    chart = time_chart(
        "Deployments",
        HOURS,
        [Line("deployments", [0.0] * 23 + [2.0]), Line("failed", [0.0] * 24)],
        bars=True,
        markers=[
            Marker(HOURS[10], "deployment d1 (success)"),
            Marker(HOURS[12], "deployment d2 (failure)", failed=True),
            Marker(T0 - timedelta(days=3), "long before the range"),
        ],
    )
    svg = parse(chart.svg)
    (bars,) = [e for e in svg.findall(f"{SVG}path") if "bar" in e.get("class", "")]
    assert len(points(bars)) == 1  # a bar for the one non-zero bucket
    markers = [e for e in svg.findall(f"{SVG}line") if "marker" in e.get("class", "")]
    assert [child(m, "title").text for m in markers] == [
        "deployment d1 (success)",
        "deployment d2 (failure)",
    ]
    assert markers[1].get("class") == "marker failed"
    assert num(markers[0], "x1") < num(markers[1], "x1")
    assert chart.legend == ("deployments", "failed")
    assert time_chart("Nothing", HOURS, [Line("n", [None] * 24)]).empty


def test_labels_are_escaped_and_clipped() -> None:
    payload = '<img src=x onerror="alert(1)">'
    chart = bar_list(payload, [(payload, 3.0), ("b" * 60, 1.0)])
    for markup in (str(chart.svg), str(chart.table)):
        assert "<img" not in markup
        assert "&lt;img" in markup
    svg = parse(chart.svg)
    labels = [t.text for t in svg.findall(f"{SVG}text") if t.get("class") == "label"]
    assert labels[1] == "b" * 27 + "…"
    widths = [num(r, "width") for r in svg.findall(f"{SVG}rect")]
    assert widths[0] == pytest.approx(3 * widths[1], abs=0.2)  # drawn to 0.1 px


def test_the_formats_read_as_people_write_them() -> None:
    assert [ms(v) for v in (0.5, 42.4, 1534.0, 150_000.0, 7_200_000.0, None)] == [
        "0.50 ms",
        "42 ms",
        "1.53 s",
        "2.5 min",
        "2.0 h",
        "\u2013",
    ]
    assert [pct(v) for v in (0.0, 0.0004, 0.125, 1.0)] == ["0.0 %", "<0.1 %", "12.5 %", "100.0 %"]
    assert count(1234567) == "1,234,567"
    assert nbytes(2_500_000) == "2.5 MB"
    assert when(T0) == "2026-03-01 00:00:00 UTC"


def test_deployments_in_one_bucket_share_one_marker_that_names_them() -> None:
    at = HOURS[5] + timedelta(minutes=10)
    markers = [Marker(at + timedelta(minutes=i), f"d{i}", failed=i == 3) for i in range(7)]
    chart = time_chart("Deployments", HOURS, [Line("n", [1.0] * 24)], markers=markers)
    lines = [e for e in parse(chart.svg).findall(f"{SVG}line") if "marker" in e.get("class", "")]
    assert len(lines) == 1
    assert lines[0].get("class") == "marker failed"  # one of them failed
    assert child(lines[0], "title").text == "d0; d1; d2; d3; d4; and 2 more"
    # Drawn inside its bucket's slot: between the slot's edges, not at another bucket.
    (dots,) = [e for e in parse(chart.svg).findall(f"{SVG}path") if "dot" in e.get("class", "")]
    xs = [x for x, _ in points(dots)]
    assert xs[5] - 20 < num(lines[0], "x1") < xs[6]
