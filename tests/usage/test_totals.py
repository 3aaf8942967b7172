"""Daily totals: after any workload of batches, every totals table equals a fresh
aggregate of the request log (a randomized property test), anonymous and unknown
groups included."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from tally import schema
from tally.db import make_engine
from tally.end_users.claims import EndUserClaim
from tally.keys.api_keys import create_api_key
from tally.models import DailyModelTotal, DailyTotal, MonthlyUserTotal, RequestLog
from tally.usage import records as usage
from tally.usage.call import CallRecord, Outcome
from tally.usage.records import record_calls
from tests.helpers.database import empty_database, reset_database
from tests.helpers.totals import assert_same, fresh_aggregate, stored

START = datetime(2026, 1, 30, 20, 0)  # the workload crosses a day and a month

tokens = st.one_of(st.none(), st.integers(0, 5000))
calls = st.fixed_dictionaries(
    {
        "user": st.one_of(st.none(), st.sampled_from(["ada", "bob", "cy"])),
        "key": st.sampled_from([None, 0, 1]),  # index into the keys made per example
        "model": st.one_of(st.none(), st.sampled_from(["m-a", "m-b"])),
        "endpoint": st.sampled_from(["chat.completions", "responses", "embeddings"]),
        "status": st.sampled_from([200, 200, 200, 429, 499, 502]),
        "prompt": tokens,
        "completion": tokens,
        "cached": tokens,
        "cost": st.one_of(st.none(), st.floats(0, 5, allow_nan=False)),
        "minutes": st.integers(0, 4 * 24 * 60),
        "refused": st.sampled_from([False, False, True]),  # refused by Tally: no usage
    }
)
workloads = st.lists(st.lists(calls, min_size=1, max_size=12), min_size=1, max_size=6)


def _call(spec: dict, key_ids: list[int]) -> tuple[CallRecord, Outcome, datetime]:
    claim = EndUserClaim(spec["user"], "user") if spec["user"] else None
    call = CallRecord(
        request_id=uuid.uuid4().hex,
        api_key_id=None if spec["key"] is None else key_ids[spec["key"]],
        claim=claim,
        identifier=f"tally_{spec['user']}" if spec["user"] and not spec["refused"] else None,
        revision_id=1,
        model=spec["model"],
        stream=False,
        endpoint=spec["endpoint"],
    )
    usage = {
        "prompt_tokens": spec["prompt"],
        "completion_tokens": spec["completion"],
        "cached_tokens": spec["cached"],
        "total_tokens": (spec["prompt"] or 0) + (spec["completion"] or 0),
        "cost": spec["cost"],
    }
    outcome = Outcome(status=spec["status"], usage=usage)
    if spec["refused"]:
        outcome = Outcome(status=spec["status"], error_code="rate_limit_exceeded", refused=True)
    return call, outcome, START + timedelta(minutes=spec["minutes"])


@settings(
    max_examples=40,
    deadline=None,
    # the database is emptied at the start of each example, so the fixture may be shared
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(workload=workloads)
def test_totals_equal_a_fresh_aggregate_of_the_log(app, workload):
    runtime = app.extensions["tally"]
    reset_database(runtime.engine)
    with runtime.sessions() as session:
        keys = [create_api_key(session, f"k{n}", "test")[0].id for n in range(2)]
    for batch in workload:
        with runtime.sessions() as session:
            record_calls(session, [_call(spec, keys) for spec in batch])
    with runtime.sessions() as session:
        assert sum(1 for _ in session.scalars(select(RequestLog.id))) == sum(map(len, workload))
        for model in (DailyTotal, DailyModelTotal, MonthlyUserTotal):
            table = model.__table__
            assert_same(fresh_aggregate(session, table), stored(session, table))


def test_anonymous_and_unknown_calls_add_up_in_one_row(app, db):
    calls = []
    for _ in range(3):
        call = CallRecord(uuid.uuid4().hex, None, None, None, None, None, False)
        calls.append((call, Outcome(status=502), START))
    record_calls(db, calls)
    row = db.execute(select(DailyTotal)).scalar_one()
    assert (row.user_id, row.api_key_id, row.model, row.requests, row.errors) == (0, 0, "", 3, 3)


def test_a_days_tokens_add_up_past_a_32_bit_integer(app, db):
    """A busy model passes 2**31 tokens in a day (25,000 a second does): its totals keep
    adding up, where a 32-bit column (PostgreSQL's integer) failed every batch after."""
    biggest = 2**31 - 1  # the largest count a request row keeps (tally.usage.numbers)
    calls = []
    for _ in range(3):
        call = CallRecord(uuid.uuid4().hex, None, None, None, None, "m", False)
        tokens = {"prompt_tokens": biggest, "completion_tokens": 1, "total_tokens": biggest}
        calls.append((call, Outcome(usage=tokens), START))
    for call in calls:  # one batch each: the second one passes the 32-bit line
        record_calls(db, [call])
    for model in (DailyTotal, DailyModelTotal, MonthlyUserTotal):
        row = db.execute(select(model)).scalar_one()
        assert (row.requests, row.prompt_tokens, row.total_tokens) == (3, 3 * biggest, 3 * biggest)
    assert len(db.scalars(select(RequestLog)).all()) == 3


def test_the_migration_adds_up_the_rows_already_logged(tmp_path):
    with empty_database(tmp_path) as url:
        engine = make_engine(url)
        try:
            schema.upgrade(engine, "0004")
            log = RequestLog.__table__
            rows = [
                {
                    "request_id": "a",
                    "created_at": START,
                    "endpoint": "responses",
                    "status": 200,
                    "total_tokens": 7,
                    "cost": 0.5,
                },
                {
                    "request_id": "b",
                    "created_at": START + timedelta(hours=30),
                    "endpoint": "x",
                    "status": 502,
                    "total_tokens": None,
                    "cost": None,
                },
            ]
            with engine.begin() as conn:
                conn.execute(insert(log), rows)
            schema.upgrade(engine)
            with Session(engine) as session:
                for model in (DailyTotal, DailyModelTotal, MonthlyUserTotal):
                    table = model.__table__
                    assert_same(fresh_aggregate(session, table), stored(session, table))
                assert len(stored(session, MonthlyUserTotal.__table__)) == 2  # Jan and Feb
        finally:
            engine.dispose()


def test_a_batch_naming_more_users_than_a_lookup_takes(app, db, monkeypatch):
    monkeypatch.setattr(usage, "LOOKUP_CHUNK", 3)  # stands for the databases' limits
    calls = []
    for n in range(10):
        claim = EndUserClaim(f"u{n}", "user")
        call = CallRecord(uuid.uuid4().hex, None, claim, f"tally_u{n}", 1, "m", False)
        calls.append((call, Outcome(), START))
    record_calls(db, calls)
    logged = db.scalars(select(RequestLog)).all()
    assert len({row.user_id for row in logged}) == 10
    assert len({row.identifier_id for row in logged}) == 10 and None not in {
        row.identifier_id for row in logged
    }
