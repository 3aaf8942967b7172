"""The top users of a range, found by the threshold algorithm over monthly totals, are
exactly those a plain sum of every user's days would rank first."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from tally.end_users.claims import EndUserClaim
from tally.models import EndUser
from tally.reports import ranking
from tally.usage.call import CallRecord, Outcome
from tally.usage.records import record_calls
from tests.helpers.database import reset_database

FIRST_DAY = datetime(2026, 1, 20, 12, 0)

calls = st.lists(
    st.tuples(
        st.integers(0, 14),  # user (0: anonymous)
        st.integers(0, 40),  # day after FIRST_DAY: across a month's end
        st.sampled_from([0.0, 0.0, 0.01, 0.5, 1.0, 3.0]),  # ties and zero costs on purpose
    ),
    min_size=1,
    max_size=80,
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # emptied per example
)
@given(
    workload=calls,
    limit=st.integers(1, 6),
    span=st.tuples(st.integers(0, 40), st.integers(0, 40)),
)
def test_top_users_equal_a_full_ranking(app, workload, limit, span):
    runtime = app.extensions["tally"]
    reset_database(runtime.engine)
    batch = []
    for user, day, cost in workload:
        claim = EndUserClaim(f"u{user}", "user") if user else None
        call = CallRecord(uuid.uuid4().hex, None, claim, None, None, "m", False)
        batch.append((call, Outcome(usage={"cost": cost}), FIRST_DAY + timedelta(days=day)))
    start, end = (FIRST_DAY.date() + timedelta(days=d) for d in sorted(span))
    with runtime.sessions() as session:
        record_calls(session, batch)
        everyone = ranking.top_users(session, start, end, None)
        assert ranking.top_users(session, start, end, limit) == everyone[:limit]


def test_a_range_across_a_year_reads_every_month_it_touches(db):
    """One user's spend in each month of 2026-11-15..2027-02-01, the last on its last
    day: a month the ranking skipped would leave its user out."""
    spend = {
        "nov": (datetime(2026, 11, 15), 1.0),
        "dec": (datetime(2026, 12, 31, 23), 2.0),
        "jan": (datetime(2027, 1, 1), 3.0),
        "feb": (datetime(2027, 2, 1, 23), 4.0),
        "before": (datetime(2026, 11, 14), 9.0),  # in November's totals, not in the range
    }
    batch = [
        (
            CallRecord(uuid.uuid4().hex, None, EndUserClaim(user, "user"), None, None, "m", False),
            Outcome(usage={"cost": cost}),
            when,
        )
        for user, (when, cost) in spend.items()
    ]
    record_calls(db, batch)
    names = dict(db.execute(select(EndUser.id, EndUser.external_id)).all())
    for limit in (1, 2, 3, 4):
        ranked = ranking.top_users(db, date(2026, 11, 15), date(2027, 2, 1), limit)
        assert [names[user_id] for user_id, _ in ranked] == ["feb", "jan", "dec", "nov"][:limit]
