"""The totals tables checked against the request log: what a table holds, the log added
up from scratch keyed like it, and the two compared."""

from __future__ import annotations

from collections import defaultdict

import pytest
from sqlalchemy import select

from tally.models import RequestLog
from tally.usage.totals import SUMS, TABLES, group_key, row_sums


def fresh_aggregate(session, table) -> dict[tuple, tuple]:
    """The request log added up from scratch, keyed like ``table``."""
    found: dict[tuple, list] = defaultdict(lambda: [0] * len(SUMS))
    for log in session.scalars(select(RequestLog)):
        row = {c.name: getattr(log, c.key) for c in RequestLog.__table__.columns}
        key = group_key(row)
        acc = found[tuple(key[name] for name in TABLES[table])]
        for n, value in enumerate(row_sums(row)):
            acc[n] += value
    return {key: tuple(sums) for key, sums in found.items()}


def stored(session, table) -> dict[tuple, tuple]:
    """What ``table`` holds, keyed by its key columns."""
    names = TABLES[table]
    return {
        tuple(row[n] for n in names): tuple(row[s] for s in SUMS)
        for row in session.execute(select(table)).mappings()
    }


def assert_same(expected: dict, actual: dict) -> None:
    """Same groups; the same counts and tokens exactly, the same cost to 1e-9."""
    assert expected.keys() == actual.keys()
    cost = SUMS.index("cost")
    for key, sums in expected.items():
        exact = [n for n in range(len(SUMS)) if n != cost]
        assert [actual[key][n] for n in exact] == [sums[n] for n in exact], key  # counts, tokens
        assert actual[key][cost] == pytest.approx(sums[cost], rel=1e-9, abs=1e-9), key
