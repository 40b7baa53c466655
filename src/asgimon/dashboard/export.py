"""CSV export of any list an endpoint answers (``?format=csv&table=…``)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from asgimon.analytics.ranges import BadQuery

# A cell starting with one of these is a formula to a spreadsheet (CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


FREE_FORM = frozenset({"context"})
"""Objects whose keys the data decides (an error's context): one JSON cell, not a column per
key, or a thousand distinct keys would make a thousand columns."""


def flatten(row: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Nested objects become dotted columns; nested lists and free-form objects a JSON cell."""
    for key, value in row.items():
        name = prefix + key
        if isinstance(value, Mapping) and key in FREE_FORM:
            yield name, json.dumps(value, separators=(",", ":"), default=str)
        elif isinstance(value, Mapping):
            yield from flatten(value, name + ".")
        elif isinstance(value, list):
            yield name, json.dumps(value, separators=(",", ":"))
        else:
            yield name, value


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    flat = [dict(flatten(r)) for r in rows]
    columns: dict[str, None] = {}
    for r in flat:
        columns.update(dict.fromkeys(r))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(list(columns))
    for r in flat:
        writer.writerow([_cell(r.get(c)) for c in columns])
    return out.getvalue()


def csv_response(rows: Sequence[Mapping[str, Any]], filename: str) -> Response:
    safe = "".join(c if (c.isascii() and c.isalnum()) or c in "-_." else "_" for c in filename)
    return Response(
        to_csv(rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{safe}"'},
    )


def export_table(request: Request, tables: tuple[str, ...]) -> str | None:
    """The table to answer as CSV, or None for JSON."""
    fmt = request.query_params.get("format", "json")
    if fmt not in ("json", "csv"):
        raise BadQuery("format", "must be json or csv")
    table = request.query_params.get("table")
    if table is not None and table not in tables:
        raise BadQuery("table", "must be one of " + ", ".join(tables))
    if fmt == "json":
        if table is not None:
            raise BadQuery("table", "only with format=csv")
        return None
    return table or tables[0]
