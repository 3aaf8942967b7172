"""The background usage writer: batches leave exactly the rows one-by-one writes leave."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import select

from tally.end_users.claims import EndUserClaim
from tally.models import ApiKey, EndUser, RequestLog, UpstreamIdentifier
from tally.usage.call import CallRecord, Outcome
from tally.usage.records import record_call
from tally.usage.writer.background import UsageWriter


def call(request_id: str, user: str | None, profile: dict | None = None, key_id=None):
    claim = None
    if user is not None:
        source = "identity" if profile is not None else "user"
        claim = EndUserClaim(user, source, profile or {})
    return CallRecord(
        request_id=request_id,
        api_key_id=key_id,
        claim=claim,
        identifier=f"tally_{user}" if user else None,
        revision_id=1,
        model="m",
        stream=False,
    )


def outcome(tokens: int = 15) -> Outcome:
    return Outcome(usage={"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": tokens})


def snapshot(session):
    users = {
        u.external_id: (u.display_name, u.first_seen <= u.last_seen)
        for u in session.scalars(select(EndUser))
    }
    idents = {i.identifier: i.request_count for i in session.scalars(select(UpstreamIdentifier))}
    rows = [
        (r.request_id, r.user.external_id if r.user else None, r.total_tokens, r.status)
        for r in session.scalars(select(RequestLog).order_by(RequestLog.request_id))
    ]
    return users, idents, rows


def test_a_batch_writes_what_single_writes_would(app, make_key, db):
    make_key("web")
    key_id = db.scalars(select(ApiKey.id)).one()
    calls = [
        call("r1", "ada", key_id=key_id),
        call("r2", "bob", {"display_name": "Bob"}, key_id=key_id),
        call("r3", "ada", key_id=key_id),
        call("r4", None, key_id=key_id),
        call("r5", "ada", {"display_name": "Ada"}),
    ]
    writer = UsageWriter(app.extensions["tally"].sessions)
    for item in calls:
        writer.submit(item, outcome())
    assert writer.flush()
    writer.close()
    db.expire_all()
    users, idents, rows = snapshot(db)
    assert users == {"ada": ("Ada", True), "bob": ("Bob", True)}
    assert idents == {"tally_ada": 3, "tally_bob": 1}
    assert rows == [
        ("r1", "ada", 15, 200),
        ("r2", "bob", 15, 200),
        ("r3", "ada", 15, 200),
        ("r4", None, 15, 200),
        ("r5", "ada", 15, 200),
    ]
    assert db.get(ApiKey, key_id).last_used_at is not None
    for item in calls[:2]:
        record_call(db, replace(item, request_id="x" + item.request_id), outcome())
    assert snapshot(db)[1] == {"tally_ada": 4, "tally_bob": 2}


def test_one_bad_row_does_not_lose_the_rest_of_its_batch(app, db):
    writer = UsageWriter(app.extensions["tally"].sessions, linger=0.2)
    writer.submit(call("dup", "ada"), outcome())
    writer.submit(call("dup", "bob"), outcome())  # the same request id twice
    writer.submit(call("ok", "cy"), outcome())
    assert writer.flush()
    writer.close()
    ids = db.scalars(select(RequestLog.request_id).order_by(RequestLog.request_id)).all()
    assert ids == ["dup", "ok"]
