"""Grouped usage read from the daily totals: exact figures per grouping, agreement with a
fresh aggregate of the request log, the API key filter, paging, refusals."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import delete, select

from tally.models import ApiKey, EndUser, RequestLog
from tally.reports.breakdowns import BreakdownError, columns, grouped_rows, row_cursor
from tests.helpers.breakdowns import CY, END, EXPECTED, START, figures, record


@pytest.mark.parametrize("group_by", sorted(EXPECTED))
def test_every_grouping_has_exact_figures(db, workload, group_by):
    rows = list(grouped_rows(db, START, END, group_by))
    assert rows == EXPECTED[group_by]
    assert all(list(row) == list(columns(group_by)) for row in rows)


def _log_aggregate(db, start, end, group_by) -> dict:
    """A fresh aggregate of the request log, per group (no totals table read)."""
    key_of = {
        "user": lambda r, u, k: u,
        "model": lambda r, u, k: r.model,
        "endpoint": lambda r, u, k: r.endpoint,
        "day": lambda r, u, k: r.created_at.date().isoformat(),
        "key": lambda r, u, k: k,
    }[group_by]
    stmt = (
        select(RequestLog, EndUser.external_id, ApiKey.name)
        .outerjoin(EndUser, EndUser.id == RequestLog.user_id)
        .outerjoin(ApiKey, ApiKey.id == RequestLog.api_key_id)
        .where(RequestLog.created_at >= datetime.combine(start, datetime.min.time()))
        .where(
            RequestLog.created_at < datetime.combine(end + timedelta(days=1), datetime.min.time())
        )
    )
    groups: dict = defaultdict(lambda: [0, 0, 0, 0, 0.0])
    for row, user, key in db.execute(stmt):
        acc = groups[key_of(row, user, key)]
        for n, value in enumerate(
            (1, row.prompt_tokens, row.completion_tokens, row.cached_tokens, row.cost)
        ):
            acc[n] += value or 0
    return groups


@pytest.mark.parametrize("group_by", ["user", "model", "endpoint", "day", "key"])
def test_the_figures_agree_with_the_request_log_to_the_cent(db, workload, group_by):
    found = list(grouped_rows(db, START, END, group_by))
    fresh = _log_aggregate(db, START, END, group_by)
    name = columns(group_by)[0]
    assert {row[name] for row in found} == set(fresh)
    for row in found:
        requests, prompt, completion, cached, cost = fresh[row[name]]
        assert (row["requests"], row["prompt_tokens"]) == (requests, prompt)
        assert (row["completion_tokens"], row["cached_tokens"]) == (completion, cached)
        assert round(row["cost_usd"], 2) == round(cost, 2)
        assert abs(row["cost_usd"] - cost) < 1e-6


def test_totals_are_read_not_the_log(db, workload):
    """Pruned request rows leave every breakdown as it was."""
    db.execute(delete(RequestLog))
    db.commit()
    assert list(grouped_rows(db, START, END, "user")) == EXPECTED["user"]
    assert list(grouped_rows(db, START, END, "tag")) == EXPECTED["tag"]


def test_a_range_inside_one_month_and_across_whole_months(db, workload):
    march = list(grouped_rows(db, date(2026, 3, 1), date(2026, 3, 31), "user"))
    assert [r["internal_id"] for r in march] == [None, "ada", "cy"]
    assert march[1] | {} == {"internal_id": "ada", "display_name": "Ada L"} | figures(
        1, 200, 40, 50, 0.25
    )
    mid = list(grouped_rows(db, date(2026, 3, 2), date(2026, 3, 30), "user"))
    assert mid == [{"internal_id": "cy", "display_name": None} | CY]
    whole = list(grouped_rows(db, date(2026, 2, 1), date(2026, 4, 30), "user"))
    assert whole[1]["requests"] == 4 and whole[2]["cost_usd"] == 7.06  # the rows outside


def test_the_key_filter_gives_a_tenants_users(db, workload):
    rows = list(grouped_rows(db, START, END, "user", key="acme"))
    assert rows == [
        {"internal_id": "ada", "display_name": "Ada L"} | figures(2, 300, 60, 60, 0.35),
        {"internal_id": "bob", "display_name": None} | figures(1, 10, 10, 0, 0.01),
        {"internal_id": "cy", "display_name": None} | CY,
    ]
    assert list(grouped_rows(db, START, END, "model", key="globex")) == [
        {"model": "m-b"} | figures(2, 51, 7, 0, 0.05)
    ]
    assert list(grouped_rows(db, START, END, "tag", key="globex")) == [
        {"tag": "beta"} | figures(1, 1, 2, 0, 0.0),
        {"tag": "plan-free"} | figures(1, 50, 5, 0, 0.05),
        {"tag": "plan-pro"} | figures(1, 1, 2, 0, 0.0),
    ]


@pytest.mark.parametrize(
    "group_by,message",
    [
        ("planet", "group_by must be one of user, model, endpoint, day, tag, key, metadata:KEY"),
        ("metadata:", "metadata:KEY needs a key of 1-64 of [A-Za-z0-9._-]"),
        ("metadata:a b", "metadata:KEY needs a key"),
        ("metadata:requests", "metadata key 'requests' clashes with a column name"),
    ],
)
def test_a_bad_grouping_is_refused(db, group_by, message):
    with pytest.raises(BreakdownError) as err:
        grouped_rows(db, START, END, group_by)  # refused before any row is read
    assert message in str(err.value)


def test_bad_arguments_are_refused(db, workload):
    with pytest.raises(BreakdownError, match="no API key is named 'nope'"):
        grouped_rows(db, START, END, "user", key="nope")
    with pytest.raises(BreakdownError, match="start on or before its end"):
        grouped_rows(db, END, START, "user")
    with pytest.raises(BreakdownError, match="after must be a day written YYYY-MM-DD"):
        grouped_rows(db, START, END, "day", after="yesterday")


@pytest.fixture
def many(app, workload):
    """60 more users with random tags and plans, on random days and keys."""
    rng = random.Random(3)
    calls = []
    for n in range(300):
        user = f"u{rng.randrange(60):02d}" if rng.random() < 0.9 else None
        when = datetime(2026, 2, 27) + timedelta(minutes=rng.randrange(35 * 24 * 60))
        key = rng.choice(["acme", "globex", None])
        model = rng.choice(["m-a", "m-b", "m-c", None])
        endpoint = rng.choice(["chat.completions", "responses"])
        calls.append((when.isoformat(), user, key, model, endpoint, 3, 2, 1, 0.001 * n, 200))
    with app.extensions["tally"].sessions() as session:
        record(session, calls, workload)


@pytest.mark.parametrize("group_by", sorted(EXPECTED))
@pytest.mark.parametrize("limit", [1, 4])
def test_paging_reads_every_row_once(db, many, group_by, limit):
    whole = list(grouped_rows(db, START, END, group_by))
    paged, after = [], None
    while True:
        page = list(grouped_rows(db, START, END, group_by, after=after, limit=limit))
        paged += page
        if len(page) < limit:
            break
        after = row_cursor(group_by, page[-1])
    assert paged == whole
    cursors = [row_cursor(group_by, row) for row in whole]
    assert cursors == sorted(cursors, key=str.encode) and len(set(cursors)) == len(cursors)


def test_the_anonymous_row_comes_first_with_an_empty_cursor(db, workload):
    first = next(grouped_rows(db, START, END, "user"))
    assert row_cursor("user", first) == ""
    rest = list(grouped_rows(db, START, END, "user", after=""))
    assert [r["internal_id"] for r in rest] == ["ada", "bob", "cy"]
    assert list(grouped_rows(db, START, END, "user", after="ada", limit=1)) == [
        {"internal_id": "bob", "display_name": None} | figures(2, 60, 15, 0, 0.06)
    ]
    assert list(grouped_rows(db, START, END, "tag", after="beta", limit=1)) == [
        {"tag": "plan-free"} | figures(2, 60, 15, 0, 0.06)
    ]
