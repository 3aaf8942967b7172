"""The usage report: totals per day, user and model over a range; chart; CSV export."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta

import pytest

from tally.db import utcnow
from tally.end_users.directory import upsert_end_user
from tests.helpers.console import text
from tests.helpers.rows import record_traffic


@pytest.fixture
def traffic(app):
    """Known rows: yesterday and today, two users and an anonymous call, one error."""
    today = utcnow().replace(hour=12, minute=0, second=0, microsecond=0)
    yesterday = today - timedelta(days=1)
    with app.extensions["tally"].sessions() as session:
        upsert_end_user(session, "ada", {"display_name": '=HYPERLINK("x")'})
        upsert_end_user(session, "bob")
        session.commit()
        rows = [
            (yesterday, "ada", "m-a", 200, 100, 1.0),
            (today, "ada", "m-a", 200, 50, 0.5),
            (today, "bob", "m-b", 200, 10, 0.01),
            (today, None, "m-b", 502, None, None),
            (today - timedelta(days=60), "bob", "m-b", 200, 999, 9.0),  # out of range
        ]
        fields = ("when", "user", "model", "status", "tokens", "cost")
        record_traffic(session, [dict(zip(fields, row, strict=True)) for row in rows])
    return today


def test_dashboard_totals(admin, traffic):
    page = text(admin.get("/"))
    today = page.split("Last 30 days", 1)[0]
    assert ">3<" in today  # requests today
    assert "$0.51" in today
    month = page.split("Last 30 days", 1)[1]
    assert ">4<" in month and "$1.51" in month and "<svg" in month
    assert ">ada</code>" in page  # top user


def test_usage_report(admin, traffic):
    day = traffic.date()
    start = (day - timedelta(days=1)).isoformat()
    response = admin.get(f"/usage?start={start}&end={day.isoformat()}&metric=cost", htmx=True)
    assert response.status_code == 200
    body = text(response)
    assert body.lstrip().startswith('<div id="usage-report"')
    assert "$1.51" in body
    assert body.count('class="chart-bar"') == 2  # one bar per day of the range
    assert "m-a" in body and "m-b" in body and ">ada</code>" in body and "(anonymous)" in body


def test_usage_defaults_to_the_last_30_days(admin, traffic):
    page = text(admin.get("/usage"))
    assert page.count('class="chart-bar"') == 30
    assert "$9.00" not in page


@pytest.mark.parametrize(
    "query,message",
    [
        ("start=yesterday", "start must be a date"),
        ("end=2026-13-01", "end must be a date"),
        ("start=2026-02-01&end=2026-01-01", "start must be on or before end"),
        ("start=2020-01-01&end=2026-01-01", "at most 366 days"),
    ],
)
def test_bad_range_is_a_422_form_message(admin, query, message):
    response = admin.get(f"/usage?{query}")
    assert response.status_code == 422
    assert message in text(response)
    assert 'name="start"' in text(response)  # the form is still there
    fragment = admin.get(f"/usage?{query}", htmx=True)
    assert fragment.status_code == 422 and message in text(fragment)


@pytest.mark.parametrize("by", ["day", "user", "model"])
def test_csv_export(admin, traffic, by):
    day = traffic.date()
    start = (day - timedelta(days=1)).isoformat()
    response = admin.get(f"/usage.csv?start={start}&end={day.isoformat()}&group_by={by}")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.is_streamed
    assert f"tally-usage-by-{by}-" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(text(response))))
    assert sum(int(r["requests"]) for r in rows) == 4
    assert abs(sum(float(r["cost_usd"]) for r in rows) - 1.51) < 1e-9
    if by == "day":
        assert [r["day"] for r in rows] == [start, day.isoformat()]
    if by == "user":
        ada = next(r for r in rows if r["internal_id"] == "ada")
        assert ada["display_name"].startswith("'=")  # no formula in a spreadsheet
        assert ada["requests"] == "2" and ada["cost_usd"] == "1.500000"


def test_csv_export_refuses_a_bad_grouping(admin):
    response = admin.get("/usage.csv?group_by=planet")
    assert response.status_code == 422
    assert "group_by must be one of" in text(response)


def test_days_are_utc_calendar_days(app, admin):
    with app.extensions["tally"].sessions() as session:
        record_traffic(
            session,
            [{"when": datetime(2026, 1, 1, 23, 59, 59)}, {"when": datetime(2026, 1, 2, 0, 0, 0)}],
        )
    response = admin.get("/usage.csv?start=2026-01-01&end=2026-01-02&by=day")  # older links
    rows = list(csv.DictReader(io.StringIO(text(response))))
    assert [(r["day"], r["requests"]) for r in rows] == [("2026-01-01", "1"), ("2026-01-02", "1")]
