"""``usage prune``: old request rows deleted, the daily totals that counted them kept."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import func, select

from tally.db import utcnow
from tally.end_users.claims import EndUserClaim
from tally.models import AuditEntry, DailyModelTotal, DailyTotal, MonthlyUserTotal, RequestLog
from tally.usage.call import CallRecord, Outcome
from tally.usage.records import record_calls

USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "cost": 0.25}


def record(db, days_ago: float, user: str = "ada") -> str:
    """Record one call that ended ``days_ago`` days ago; return its request id."""
    call = CallRecord(
        request_id=uuid.uuid4().hex,
        api_key_id=None,
        claim=EndUserClaim(user, "user"),
        identifier=f"tally_{user}",
        revision_id=1,
        model="m-a",
        stream=False,
    )
    record_calls(db, [(call, Outcome(usage=dict(USAGE)), utcnow() - timedelta(days=days_ago))])
    return call.request_id


def totals(db) -> list[tuple]:
    return [
        (
            table.__tablename__,
            db.scalar(select(func.sum(table.requests))),
            db.scalar(select(func.sum(table.total_tokens))),
            db.scalar(select(func.sum(table.cost))),
        )
        for table in (DailyTotal, DailyModelTotal, MonthlyUserTotal)
    ]


def test_prune_deletes_old_rows_keeps_totals_and_says_what_it_did(runner, db):
    old = [record(db, 40), record(db, 36, "bob")]
    recent = [record(db, 34), record(db, 0.01, "bob")]
    before = totals(db)
    assert before[0][1:] == (4, 60, 1.0)
    result = runner.invoke(args=["usage", "prune", "--older-than", "35"])
    assert result.exit_code == 0, result.output
    first, second = result.output.splitlines()
    assert first.startswith("Deleted 2 request rows created before ")
    assert first.endswith(" UTC; totals kept.")
    assert second.startswith("Oldest request row left: ")
    db.expire_all()
    left = set(db.scalars(select(RequestLog.request_id)))
    assert left == set(recent) and not left & set(old)
    assert totals(db) == before
    entry = db.scalars(select(AuditEntry).where(AuditEntry.action == "usage.prune")).one()
    assert (entry.actor, entry.after) == (
        "cli",
        {"deleted": 2, "older_than_days": 35, "sink_events": 0},
    )
    again = runner.invoke(args=["usage", "prune", "--older-than", "35"])
    assert again.output.startswith("Deleted 0 request rows")


def test_prune_refuses_a_bad_age_with_exit_status_2(runner, db):
    record(db, 40)
    for value in ("0", "-3", "soon"):
        result = runner.invoke(args=["usage", "prune", "--older-than", value])
        assert result.exit_code == 2, result.output
    result = runner.invoke(args=["usage", "prune"])
    assert result.exit_code == 2
    assert db.scalar(select(func.count(RequestLog.id))) == 1


def test_a_prune_shorter_than_a_month_warns_about_the_limits_counters(runner, db):
    result = runner.invoke(args=["usage", "prune", "--older-than", "7"])
    assert result.exit_code == 0
    assert "Warning: rows younger than 32 days rebuild the monthly token" in result.output
    assert "Warning" not in runner.invoke(args=["usage", "prune", "--older-than", "32"]).output


def test_prune_deletes_sink_events_delivered_before_the_cutoff(runner, db):
    from tally.models import Sink, SinkEvent

    sink = Sink(name="s", kind="webhook", url="https://x", events="usage", created_by="t")
    db.add(sink)
    db.flush()
    now = utcnow()
    for event_id, delivered, waiting in (
        ("old", now - timedelta(days=40), None),
        ("recent", now - timedelta(days=2), None),
        ("waiting", None, now),
    ):
        db.add(
            SinkEvent(
                sink_id=sink.id,
                event_id=event_id,
                type="llm.usage",
                payload={},
                created_at=now - timedelta(days=41),
                delivered_at=delivered,
                next_attempt_at=waiting,
            )
        )
    db.commit()
    result = runner.invoke(args=["usage", "prune", "--older-than", "35"])
    assert result.exit_code == 0, result.output
    assert sorted(db.scalars(select(SinkEvent.event_id))) == ["recent", "waiting"]
