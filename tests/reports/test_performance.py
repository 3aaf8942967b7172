"""Per-user latency and time-to-first-token percentiles (percentile_cont's interpolation,
over the newest successful rows of the range, capped) and the prompt-cache hit share
(from the daily totals), on the identity page and the dashboard's top users."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import select

from tally.db import utcnow
from tally.end_users.claims import EndUserClaim
from tally.models import AuditEntry, EndUser
from tally.reports import performance
from tally.reports.performance import percentile, percentiles, user_performance
from tally.usage.call import CallRecord, Outcome
from tally.usage.records import record_calls
from tests.helpers.console import text


def _call(user, when, latency, ttft=None, status=200, prompt=10, cached=0):
    n = _call.count = getattr(_call, "count", 0) + 1
    call = CallRecord(f"p-{n}", None, EndUserClaim(user, "user"), None, None, "m", ttft is not None)
    usage = {"prompt_tokens": prompt, "cached_tokens": cached, "completion_tokens": 1}
    outcome = Outcome(status=status, usage=usage, latency_ms=latency, ttft_ms=ttft)
    return call, outcome, when


@pytest.fixture
def workload(db):
    """ada: 100 successful calls today, latencies 10..1000 ms (TTFT on the 50 even ones
    only: 5..500 ms), 1,000 prompt tokens of which 250 cached; plus errors, an older
    call out of the range and another user, none of which may count."""
    now = utcnow().replace(microsecond=0) - timedelta(minutes=5)
    batch = []
    for n in range(1, 101):
        ttft = n * 5.0 if n % 2 == 0 else None
        cached = 25 if n <= 10 else 0
        batch.append(_call("ada", now - timedelta(seconds=n), n * 10.0, ttft, cached=cached))
    batch.append(_call("ada", now, 99_999.0, 99_999.0, status=502, prompt=0))
    batch.append(_call("ada", now - timedelta(days=40), 77_777.0, 77_777.0, prompt=0))
    batch.append(_call("bob", now, 55_555.0, 55_555.0, prompt=100, cached=100))
    record_calls(db, batch)
    return db.scalars(select(EndUser.id).where(EndUser.external_id == "ada")).one()


def test_percentile_interpolates_like_percentile_cont():
    values = [10.0 * n for n in range(1, 101)]
    assert percentile(values, 0.5) == pytest.approx(505.0)
    assert percentile(values, 0.95) == pytest.approx(950.5)
    assert percentile(values, 0.99) == pytest.approx(990.1)
    assert percentile([7.0], 0.99) == 7.0
    assert percentiles([]) == performance.Percentiles()
    assert percentiles([3.0, 1.0, 2.0]) == performance.Percentiles(2.0, 2.9, 2.98, 3)


def test_user_performance_is_exact(db, workload):
    today = utcnow().date()
    found = user_performance(db, workload, today - timedelta(days=29), today)
    assert (found.latency.p50, found.latency.count) == (pytest.approx(505.0), 100)
    assert found.latency.p95 == pytest.approx(950.5)
    assert found.latency.p99 == pytest.approx(990.1)
    # TTFT of the streams only: 10, 20, …, 500 ms
    assert (found.ttft.p50, found.ttft.count) == (pytest.approx(255.0), 50)
    assert found.ttft.p95 == pytest.approx(475.5)
    assert found.ttft.p99 == pytest.approx(495.1)
    assert (found.rows, found.capped) == (100, False)
    assert (found.cache.prompt_tokens, found.cache.cached_tokens) == (1000, 250)
    assert found.cache.share == 0.25


def test_percentiles_read_the_newest_rows_when_capped(db, workload):
    today = utcnow().date()
    found = user_performance(db, workload, today - timedelta(days=29), today, max_rows=10)
    # the newest ten successful calls: latencies 10..100 ms
    assert (found.rows, found.capped) == (10, True)
    assert found.latency.p50 == pytest.approx(55.0)
    assert found.cache.share == 0.25  # the totals are never capped


def test_a_range_without_traffic(db, workload):
    found = user_performance(db, workload, date(2020, 1, 1), date(2020, 1, 31))
    assert found.latency == performance.Percentiles() and found.cache.share is None
    assert (found.rows, found.capped) == (0, False)


def test_the_identity_page_shows_them(support, workload, monkeypatch):
    page = text(support.get(f"/identities/{workload}"))
    section = page.split('id="user-performance"')[1].split("</section>")[0]
    latency = section.split('data-figure="Latency"')[1].split("</tr>")[0]
    assert all(part in latency for part in ("505 ms", "950 ms", "990 ms", ">100<"))
    ttft = section.split('data-figure="Time to first token"')[1].split("</tr>")[0]
    assert all(part in ttft for part in ("255 ms", "476 ms", "495 ms", ">50<"))
    assert "25.0%" in section and "250 of 1,000 prompt tokens" in section
    assert "Over the 100 successful requests of the range" in section
    monkeypatch.setattr(performance, "MAX_ROWS", 10)
    capped = text(support.get(f"/identities/{workload}"))
    assert "From the newest 10 successful requests of the range: it holds more." in capped


def test_the_identity_page_takes_a_range(support, workload):
    old = utcnow().date() - timedelta(days=40)
    page = text(support.get(f"/identities/{workload}?start={old}&end={old}"))
    section = page.split('id="user-performance"')[1].split("</section>")[0]
    assert f"{old} → {old}" in section and "77777 ms" in section
    assert "Prompt cache hit share: <strong>–</strong>" in section


@pytest.mark.parametrize(
    "query,message",
    [
        ("start=yesterday", "start must be a date written YYYY-MM-DD"),
        ("start=2026-11-05&end=2026-11-01", "start must be on or before end"),
    ],
)
def test_a_bad_range_is_a_form_message(support, workload, query, message):
    response = support.get(f"/identities/{workload}?{query}")
    assert response.status_code == 422
    page = text(response)
    assert message in page and '<code class="internal-id">ada</code>' in page


def test_the_dashboard_shows_each_top_users_cache_hits(support, workload):
    page = text(support.get("/"))
    rows = {
        user: page.split(f"<code>{user}</code>")[1].split("</tr>")[0] for user in ("ada", "bob")
    }
    assert 'cache-share">25.0%<' in rows["ada"]
    assert 'cache-share">100.0%<' in rows["bob"]


def test_a_bad_range_is_audited_once_and_a_missing_user_is_404(support, workload, db):
    assert support.get(f"/identities/{workload}?start=nope").status_code == 422
    entries = db.scalars(
        select(AuditEntry.target).where(AuditEntry.action == "identity.lookup")
    ).all()
    assert entries == ["ada"]
    assert support.get("/identities/999999?start=nope").status_code == 404
