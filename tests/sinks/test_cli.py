"""``flask --app app sinks …``: add (a webhook's secret printed once, stored encrypted,
never in the audit log or the list), list, remove, replay; bad input is one line and
exit status 2, hostile bytes included."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from tally.db import utcnow
from tally.models import AuditEntry, RequestLog, Sink, SinkEvent
from tally.sinks.secrets import decrypt
from tests.helpers.settings import SECRET_KEY


def test_a_webhook_gets_a_secret_printed_once_and_stored_encrypted(runner, db):
    result = runner.invoke(
        args=["sinks", "add", "hook", "--kind", "webhook", "--url", "https://example.com/h"]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    secret = lines[-1]
    assert secret.startswith("whsec_") and "not shown again" in lines[0]
    sink = db.scalars(select(Sink)).one()
    assert (sink.name, sink.kind, sink.url, sink.events) == (
        "hook",
        "webhook",
        "https://example.com/h",
        "usage",
    )
    assert (
        secret not in sink.secret_encrypted and decrypt(SECRET_KEY, sink.secret_encrypted) == secret
    )
    listed = runner.invoke(args=["sinks", "list"]).output
    assert "hook\twebhook\tusage\thttps://example.com/h\tbacklog=0" in listed
    assert secret not in listed
    audit = db.scalars(select(AuditEntry)).one()
    assert audit.action == "sink.add" and audit.target == "hook"
    assert secret not in json.dumps(audit.after)


def test_kinds_and_their_events(runner, db):
    ok = [
        ["stripe-a", "--kind", "stripe", "--url", "https://api.stripe.com", "--secret", "sk_x"],
        ["om", "--kind", "openmeter", "--url", "https://om.example", "--events", "usage,alerts"],
        ["ops", "--kind", "slack", "--url", "https://hooks.slack.com/services/T/B/XYZ"],
    ]
    for args in ok:
        result = runner.invoke(args=["sinks", "add", *args])
        assert result.exit_code == 0, result.output
        assert "whsec_" not in result.output
    events = dict(db.execute(select(Sink.name, Sink.events)).all())
    assert events == {"stripe-a": "usage", "om": "usage,alerts", "ops": "alerts"}
    listed = runner.invoke(args=["sinks", "list"]).output
    assert "XYZ" not in listed  # a Slack webhook's path is its secret
    assert "sk_x" not in listed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "a", "--kind", "ftp", "--url", "https://x"], "Error: kind must be one of"),
        (["add", "a", "--kind", "webhook", "--url", "ftp://x"], "Error: url must be an http"),
        (["add", "a", "--kind", "webhook", "--url", "https://"], "Error: url must be an http"),
        (["add", "a b", "--kind", "webhook", "--url", "https://x"], "Error: a sink name must"),
        (["add", "a" * 101, "--kind", "webhook", "--url", "https://x"], "Error: name must be at"),
        (
            ["add", "a", "--kind", "webhook", "--url", "https://x/" + "p" * 3000],
            "Error: url must be at most 2048",
        ),
        (["add", "a\ud800", "--kind", "webhook", "--url", "https://x"], "Error: name must not"),
        (["add", "a", "--kind", "webhook", "--url", "https://x/\udcff"], "Error: url must not"),
        (
            ["add", "a", "--kind", "webhook", "--url", "https://x", "--secret", "nope"],
            "Error: a webhook secret",
        ),
        (["add", "a", "--kind", "stripe", "--url", "https://x"], "Error: a stripe sink needs"),
        (
            ["add", "a", "--kind", "slack", "--url", "https://x", "--events", "usage"],
            "Error: a slack sink takes alerts events only",
        ),
        (
            ["add", "a", "--kind", "webhook", "--url", "https://x", "--events", "bills"],
            "Error: events must be",
        ),
        (["remove", "ghost"], "Error: no sink named 'ghost'"),
        (["add", "a", "--url", "https://x"], "Error: --kind (stripe|openmeter|webhook|slack)"),
        (["add", "a", "--kind", "webhook"], "Error: --kind (stripe|openmeter|webhook|slack)"),
        (["replay", "a"], "Error: --from YYYY-MM-DD is required"),
        (["replay", "ghost", "--from", "2026-01-01"], "Error: no sink named 'ghost'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(runner, db, args, message):
    result = runner.invoke(args=["sinks", *args])
    assert result.exit_code == 2, result.output
    assert result.output.strip().startswith(message)
    assert len(result.output.strip().splitlines()) == 1
    assert db.scalars(select(Sink)).all() == []


def test_a_duplicate_name_and_a_bad_day(runner):
    add = ["sinks", "add", "a", "--kind", "webhook", "--url", "https://x"]
    assert runner.invoke(args=add).exit_code == 0
    again = runner.invoke(args=add)
    assert again.exit_code == 2 and again.output.strip() == "Error: a sink named 'a' already exists"
    bad = runner.invoke(args=["sinks", "replay", "a", "--from", "yesterday"])
    assert bad.exit_code == 2 and bad.output.strip() == "Error: --from must be a day, YYYY-MM-DD"


def test_remove_drops_the_sink_and_its_events(runner, db):
    runner.invoke(args=["sinks", "add", "a", "--kind", "webhook", "--url", "https://x"])
    result = runner.invoke(args=["sinks", "remove", "a"])
    assert result.exit_code == 0 and "Removed sink 'a'" in result.output
    assert db.scalars(select(Sink)).all() == []
    assert [a.action for a in db.scalars(select(AuditEntry).order_by(AuditEntry.id))] == [
        "sink.add",
        "sink.remove",
    ]


def test_replay_queues_the_days_calls_again_under_the_same_ids(runner, db):
    runner.invoke(args=["sinks", "add", "a", "--kind", "webhook", "--url", "https://x"])
    now = utcnow()
    for n, (day_offset, refused) in enumerate([(0, False), (0, True), (-3, False)]):
        db.add(
            RequestLog(
                request_id=f"req{n}",
                created_at=now.replace(day=1) if day_offset else now,
                status=200,
                refused=refused,
                prompt_tokens=1,
                completion_tokens=1,
                total_tokens=2,
            )
        )
    db.commit()
    day = now.date().isoformat()
    result = runner.invoke(args=["sinks", "replay", "a", "--from", day])
    assert result.exit_code == 0 and "Queued" in result.output
    ids = db.scalars(select(SinkEvent.event_id)).all()
    assert "req0" in ids and "req1" not in ids  # refused calls never reached the upstream
    # delivered meanwhile, then replayed: due again under the same id
    db.execute(SinkEvent.__table__.update().values(delivered_at=now, next_attempt_at=None))
    db.commit()
    runner.invoke(args=["sinks", "replay", "a", "--from", day])
    db.expire_all()
    events = db.scalars(select(SinkEvent).where(SinkEvent.event_id == "req0")).all()
    assert len(events) == 1 and events[0].delivered_at is None
    assert events[0].next_attempt_at is not None
    assert db.scalars(select(AuditEntry.action)).all()[-1] == "sink.replay"
