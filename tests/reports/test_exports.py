"""CSV and JSON written a chunk at a time, and the ``next`` cursor of a full page."""

from __future__ import annotations

import json

import pytest

from tally.reports import exports
from tally.reports.breakdowns import BreakdownError, columns, grouped_rows
from tally.reports.exports import csv_chunks, export_chunks, json_chunks
from tests.helpers.breakdowns import END, EXPECTED, START

ROWS = [
    {"tag": None, "requests": 1, "cost_usd": 0.5},
    {"tag": "=cmd", "requests": 2, "cost_usd": 1e-06},
    {"tag": 'a "b", c', "requests": 3, "cost_usd": 0.0},
]


def test_csv_is_written_in_chunks(monkeypatch):
    monkeypatch.setattr(exports, "ROWS_PER_CHUNK", 2)
    chunks = list(csv_chunks(("tag", "requests", "cost_usd"), iter(ROWS)))
    assert chunks == [
        "tag,requests,cost_usd\n,1,0.500000\n'=cmd,2,0.000001\n",
        '"a ""b"", c",3,0.000000\n',
    ]


def test_json_is_written_in_chunks(monkeypatch):
    monkeypatch.setattr(exports, "ROWS_PER_CHUNK", 2)
    chunks = list(json_chunks(iter(ROWS)))
    assert len(chunks) == 3
    assert json.loads("".join(chunks)) == {"rows": ROWS}
    assert "".join(chunks).count("}, {") == 2  # the same separator across chunks
    assert "".join(chunks).startswith('{"rows": [{"tag": null, "requests": 1, "cost_usd": 0.5}, {')


def test_a_full_page_says_where_the_next_one_starts(db, workload):
    page = grouped_rows(db, START, END, "user", limit=2)
    body = json.loads("".join(json_chunks(page, group_by="user", limit=2)))
    assert body == {"rows": EXPECTED["user"][:2], "next": "ada"}
    after = grouped_rows(db, START, END, "user", after=body["next"], limit=2)
    body = json.loads("".join(json_chunks(after, group_by="user", limit=2)))
    assert body == {"rows": EXPECTED["user"][2:], "next": "cy"}
    last = grouped_rows(db, START, END, "user", after="cy", limit=2)
    assert json.loads("".join(json_chunks(last, group_by="user", limit=2))) == {"rows": []}


def test_the_first_page_of_users_starts_with_the_anonymous_row(db, workload):
    page = grouped_rows(db, START, END, "user", limit=1)
    body = json.loads("".join(json_chunks(page, group_by="user", limit=1)))
    assert body == {"rows": EXPECTED["user"][:1], "next": ""}


def test_an_unknown_format_is_refused():
    with pytest.raises(BreakdownError, match="format must be one of csv, json, got 'xml'"):
        export_chunks("xml", columns("user"), iter(()))
