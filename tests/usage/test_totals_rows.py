"""The totals a batch of calls leaves (tally/usage/totals.py), written out by hand rather
than added up with the module's own helpers: per day, user, key, model and endpoint;
per day, key, model and endpoint; per month and user. A 400 is an error; a call Tally
refused (a 429 of a limit) is neither a request nor an error, only a refusal."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta

from sqlalchemy import select

from tally.end_users.claims import EndUserClaim
from tally.keys.api_keys import create_api_key
from tally.models import DailyModelTotal, DailyTotal, EndUser, MonthlyUserTotal
from tally.usage.call import CallRecord, Outcome
from tally.usage.records import record_calls
from tally.usage.totals import SUMS

START = datetime(2026, 1, 30, 20, 0)
JAN_30, JAN_31, JANUARY = date(2026, 1, 30), date(2026, 1, 31), date(2026, 1, 1)


def call(key: int, user: str | None, model: str | None, endpoint: str, status: int, **usage):
    """A call as the pipeline hands it to the usage writer."""
    claim = EndUserClaim(user, "user") if user else None
    record = CallRecord(
        uuid.uuid4().hex, key, claim, f"tally_{user}" if user else None, 1, model, False, endpoint
    )
    return record, Outcome(status=status, usage=usage or None)


def refusal(key: int, user: str | None, model: str | None, endpoint: str, status: int):
    """A call Tally refused, as the pipeline hands it to the usage writer."""
    claim = EndUserClaim(user, "user") if user else None
    record = CallRecord(uuid.uuid4().hex, key, claim, None, None, model, False, endpoint)
    return record, Outcome(status=status, error_code="rate_limit_exceeded", refused=True)


def rows(db, model) -> dict[tuple, tuple]:
    """A totals table as {key columns: sums}."""
    table = model.__table__
    names = [c.name for c in table.primary_key.columns]
    return {
        tuple(row._mapping[n] for n in names): tuple(row._mapping[s] for s in SUMS)
        for row in db.execute(select(table))
    }


def test_a_batch_adds_up_in_every_totals_table(db):
    acme, globex = (create_api_key(db, name, "test")[0].id for name in ("acme", "globex"))
    calls = [
        (
            call(
                acme,
                "u1",
                "m1",
                "chat",
                200,
                prompt_tokens=10,
                completion_tokens=5,
                total_tokens=15,
                cost=0.5,
            ),
            START,
        ),
        (call(acme, "u1", "m1", "chat", 400), START + timedelta(minutes=1)),
        (refusal(acme, "u1", "m1", "chat", 429), START + timedelta(minutes=2)),
        (refusal(acme, "u1", "m1", "chat", 429), START + timedelta(minutes=3)),
        (refusal(globex, "u3", "m3", "responses", 400), START + timedelta(hours=6)),
        (call(acme, None, None, "chat", 200, total_tokens=3, cost=0.25), START),
        (
            call(globex, "u2", "m2", "embeddings", 200, prompt_tokens=7, total_tokens=7),
            START + timedelta(hours=5),
        ),
    ]
    record_calls(db, [(record, outcome, at) for (record, outcome), at in calls])
    db.commit()
    users = dict(db.execute(select(EndUser.external_id, EndUser.id)).all())
    u1, u2, u3 = users["u1"], users["u2"], users["u3"]
    # requests, errors, prompt, completion, cached, total tokens, cost, refused
    assert rows(db, DailyTotal) == {
        (JAN_30, u1, acme, "m1", "chat"): (2, 1, 10, 5, 0, 15, 0.5, 2),
        (JAN_30, 0, acme, "", "chat"): (1, 0, 0, 0, 0, 3, 0.25, 0),
        (JAN_31, u2, globex, "m2", "embeddings"): (1, 0, 7, 0, 0, 7, 0.0, 0),
        (JAN_31, u3, globex, "m3", "responses"): (0, 0, 0, 0, 0, 0, 0.0, 1),
    }
    assert rows(db, DailyModelTotal) == {
        (JAN_30, acme, "m1", "chat"): (2, 1, 10, 5, 0, 15, 0.5, 2),
        (JAN_30, acme, "", "chat"): (1, 0, 0, 0, 0, 3, 0.25, 0),
        (JAN_31, globex, "m2", "embeddings"): (1, 0, 7, 0, 0, 7, 0.0, 0),
        (JAN_31, globex, "m3", "responses"): (0, 0, 0, 0, 0, 0, 0.0, 1),
    }
    assert rows(db, MonthlyUserTotal) == {
        (JANUARY, u1): (2, 1, 10, 5, 0, 15, 0.5, 2),
        (JANUARY, 0): (1, 0, 0, 0, 0, 3, 0.25, 0),
        (JANUARY, u2): (1, 0, 7, 0, 0, 7, 0.0, 0),
        (JANUARY, u3): (0, 0, 0, 0, 0, 0, 0.0, 1),
    }
