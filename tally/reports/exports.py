"""Breakdown rows (tally.reports.breakdowns) written out as CSV or JSON, a chunk of text
at a time: an export of a hundred thousand rows is never held in memory whole. The
console, ``usage export`` and the admin API all write exports with these.

CSV: a header row of the column names, then one line per row (ended by a newline); a
null is an empty cell, ``cost_usd`` is written with 6 decimals, and text that a
spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``) gets a
leading ``'``.
JSON: ``{"rows": [{...}, ...]}`` with the same names (numbers as numbers, null as null),
plus ``"next"`` (the cursor to pass as ``after``) when a page of ``limit`` rows is full.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

from tally.reports.breakdowns import BreakdownError, row_cursor

FORMATS = ("csv", "json")
MEDIA_TYPES = {"csv": "text/csv", "json": "application/json"}
ROWS_PER_CHUNK = 1000
_ENCODER = json.JSONEncoder(ensure_ascii=False)


def check_format(fmt: str) -> str:
    """``fmt`` if it is an export format; a BreakdownError naming them otherwise."""
    if fmt not in FORMATS:
        raise BreakdownError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}", "format")
    return fmt


def export_chunks(fmt: str, columns: tuple[str, ...], rows: Iterable[dict]) -> Iterator[str]:
    """``rows`` as ``fmt`` (csv or json), chunk by chunk."""
    if check_format(fmt) == "csv":
        return csv_chunks(columns, rows)
    return json_chunks(rows)


def csv_chunks(columns: tuple[str, ...], rows: Iterable[dict]) -> Iterator[str]:
    """The header line, then the rows, ``ROWS_PER_CHUNK`` lines per chunk."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for count, row in enumerate(rows, 1):
        writer.writerow([_cell(name, row[name]) for name in columns])
        if count % ROWS_PER_CHUNK == 0:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    yield out.getvalue()


def _cell(name: str, value: Any) -> str:
    if value is None:
        return ""
    if name == "cost_usd":
        return f"{value:.6f}"
    if isinstance(value, str):
        return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
    return str(value)


def json_chunks(
    rows: Iterable[dict], *, group_by: str | None = None, limit: int | None = None
) -> Iterator[str]:
    """``{"rows": [...]}``, ``ROWS_PER_CHUNK`` rows per chunk (each chunk's rows encoded
    in one call). With ``limit`` (and the ``group_by`` the rows were read with), a page
    of exactly ``limit`` rows ends with ``"next"``: the cursor of its last row."""
    yield '{"rows": ['
    batch: list[dict] = []
    count, last = 0, None
    for row in rows:
        batch.append(row)
        if len(batch) == ROWS_PER_CHUNK:
            yield (", " if count else "") + _ENCODER.encode(batch)[1:-1]
            count, last = count + len(batch), batch[-1]
            batch = []
    tail = "]"
    if batch:
        tail = (", " if count else "") + _ENCODER.encode(batch)[1:-1] + tail
        count, last = count + len(batch), batch[-1]
    if limit is not None and group_by is not None and limit > 0 and count == limit:
        tail += ', "next": ' + _ENCODER.encode(row_cursor(group_by, last))
    yield tail + "}\n"
