"""Several delivery loops on one database (the writer process and a worker, several
workers with inline writes, two instances): each event is sent once. On SQLite the
loops take turns on a lock file next to the database; on PostgreSQL they claim with
``SKIP LOCKED``."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tally.db import utcnow
from tally.models import SinkEvent
from tally.sinks.admin import add_sink
from tally.sinks.delivery import Deliverer
from tally.sinks.lease import lock_path, turn
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.manual_delivery  # the loops are the test's own
EVENTS = 400


def test_two_loops_send_each_event_once(app, receiver):
    runtime = app.extensions["tally"]
    with runtime.sessions() as session:
        sink, secret = add_sink(
            session, runtime.settings.secret_key, "hook", "webhook", receiver.url + "/hook", "t"
        )
        now = utcnow()
        session.add_all(
            SinkEvent(
                sink_id=sink.id,
                event_id=f"req{n:04d}",
                type="llm.usage",
                payload={"id": f"req{n:04d}"},
                created_at=now,
                next_attempt_at=now,
            )
            for n in range(EVENTS)
        )
        session.commit()
    receiver.webhook_secret = secret
    key = runtime.settings.secret_key
    loops = [Deliverer(runtime.sessions, key, interval=0.005).start() for _ in range(2)]
    try:
        assert wait_for(lambda: len(receiver.on("/hook")) >= EVENTS, timeout=60)
        wait_for(lambda: False, timeout=0.5)  # a few passes more: nothing is sent again
    finally:
        for loop in loops:
            loop.stop()
    sent = [got.headers["webhook-id"] for got in receiver.on("/hook")]
    assert len(sent) == EVENTS and len(set(sent)) == EVENTS
    assert all(got.valid_signature for got in receiver.on("/hook"))
    with runtime.sessions() as session:
        waiting = session.scalars(select(SinkEvent).where(SinkEvent.delivered_at.is_(None)))
        assert waiting.all() == []


def test_on_sqlite_one_pass_at_a_time_holds_the_lease(app):
    engine = app.extensions["tally"].engine
    if engine.dialect.name != "sqlite":
        with turn(engine) as mine:
            assert mine and lock_path(engine) is None  # SKIP LOCKED does the work
        return
    assert lock_path(engine).endswith(".sinks-lock")
    with turn(engine) as first:
        assert first
        with turn(engine) as second:
            assert not second  # another loop's pass: this one skips
    with turn(engine) as again:
        assert again  # released with the pass
