"""The delivery loop: empties the outbox (``sink_events``) into the sinks.

A pass, per sink: **claim** the events that are due (``next_attempt_at`` reached, by
the ``(sink_id, next_attempt_at)`` index, oldest first; ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so instances running side by side never take the same rows) by moving
their ``next_attempt_at`` a lease ahead, and commit; **send** them (tally.sinks.senders;
no transaction is held meanwhile); **settle** each: delivered, retried after a backoff
(5 s, doubling, at most 60 s between tries; parked as given up 3 days after the event
was made), or parked at once when the receiver refused it (a 4xx other than 408 and
429). A process that dies mid-send leaves its claim to expire: its events go again
after :data:`LEASE` (at least once; each keeps its id for the receiver to dedupe).

A sink that delivers again (every event of the pass went) has its events that wait
out a backoff made due at once: the backlog of an outage drains as soon as the
receiver is back, not up to a minute later.

It runs on a thread of the usage writer process under gunicorn (one per instance), of
the worker's background writer otherwise (:func:`start_deliverer`), and of an app that
writes its rows inline once a sink exists (:class:`OnDemand`). On SQLite a pass first
takes the database's lease (tally.sinks.lease): one loop delivers at a time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from tally import metrics
from tally.db import Periodic, utcnow
from tally.models import Sink, SinkEvent
from tally.sinks.lease import turn
from tally.sinks.outbox import any_sinks
from tally.sinks.secrets import SecretUnreadable, decrypt
from tally.sinks.senders import DELIVERED, PARK, RETRY, SENDERS, Result, Target, Transport, Waiting

log = logging.getLogger(__name__)
FIRST_RETRY, LONGEST_RETRY = 5.0, 60.0  # seconds
GIVE_UP = timedelta(days=3)
LEASE = timedelta(seconds=120)  # a claim's hold: longer than any send of a batch
BATCH = 100  # events claimed per sink and pass
INTERVAL = 1.0  # seconds between passes when there was nothing to send


def retry_delay(attempts: int) -> timedelta:
    """The wait after the ``attempts``-th failed try: 5 s, doubling, at most 60 s."""
    return timedelta(seconds=min(FIRST_RETRY * 2 ** max(attempts - 1, 0), LONGEST_RETRY))


@dataclass
class PassReport:
    """What one pass did."""

    delivered: int = 0
    retrying: int = 0
    parked: int = 0
    full: bool = False  # some sink had a whole batch due: more may be waiting
    skipped: bool = False  # another loop held the SQLite database's lease (tally.sinks.lease)
    lines: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Claimed:
    waiting: Waiting
    attempts: int
    created_at: datetime


def deliver_pass(
    sessions: sessionmaker,
    secret_key: str,
    transport: Transport | None = None,
    now: datetime | None = None,
    limit: int = BATCH,
) -> PassReport:
    """Send every sink's due events (up to ``limit`` each) and settle them, at ``now``."""
    with turn(sessions.kw["bind"]) as mine:
        if not mine:  # another loop delivers on this SQLite file now
            return PassReport(skipped=True)
        return _deliver(sessions, secret_key, transport or Transport(), now or utcnow(), limit)


def _deliver(sessions, secret_key, transport, now, limit) -> PassReport:
    report = PassReport()
    with sessions() as session:
        sinks = session.execute(
            select(Sink.id, Sink.name, Sink.kind, Sink.url, Sink.secret_encrypted)
        ).all()
    for sink_id, name, kind, url, encrypted in sinks:
        claimed = _claim(sessions, sink_id, now, limit)
        if not claimed:
            continue
        report.full = report.full or len(claimed) == limit
        try:
            secret = decrypt(secret_key, encrypted) if encrypted else None
        except SecretUnreadable as exc:
            results = [Result(RETRY, str(exc))]
        else:
            sender = SENDERS[kind]
            stamp = int(now.timestamp()) if now.tzinfo else _unix(now)
            results = sender(
                transport, Target(kind, url, secret), [c.waiting for c in claimed], stamp
            )
        _settle(sessions, sink_id, name, claimed, results, now, report)
    return report


def _unix(moment: datetime) -> int:
    return int((moment - datetime(1970, 1, 1)).total_seconds())


def _claim(sessions: sessionmaker, sink_id: int, now: datetime, limit: int) -> list[_Claimed]:
    table = SinkEvent.__table__
    with sessions() as session:
        query = (
            select(
                table.c.id,
                table.c.event_id,
                table.c.type,
                table.c.payload,
                table.c.attempts,
                table.c.created_at,
            )
            .where(table.c.sink_id == sink_id, table.c.next_attempt_at <= now)
            .order_by(table.c.next_attempt_at, table.c.id)
            .limit(limit)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        rows = session.execute(query).all()
        if rows:
            session.execute(
                update(table)
                .where(table.c.id.in_([row.id for row in rows]))
                .values(next_attempt_at=now + LEASE)
            )
        session.commit()
    return [
        _Claimed(Waiting(r.id, r.event_id, r.type, r.payload), r.attempts, r.created_at)
        for r in rows
    ]


def _settle(sessions, sink_id, name, claimed, results, now, report: PassReport) -> None:
    table = SinkEvent.__table__
    retry_at = None
    sink_values: dict = {}
    with sessions() as session:
        for item, result in zip(claimed, results, strict=False):
            attempts = item.attempts + 1
            where = table.c.id == item.waiting.id
            if result.outcome == DELIVERED:
                values = {"delivered_at": now, "next_attempt_at": None, "last_error": None}
                report.delivered += 1
                sink_values["last_delivered_at"] = now
            elif result.outcome == PARK or now - item.created_at >= GIVE_UP:
                error = (
                    result.error
                    if result.outcome == PARK
                    else f"gave up after 3 days: {result.error}"
                )
                values = {"parked_at": now, "next_attempt_at": None, "last_error": error[:500]}
                report.parked += 1
                report.lines.append(f"{name}: {item.waiting.event_id} parked: {error}")
            else:
                retry_at = now + retry_delay(attempts)
                values = {"next_attempt_at": retry_at, "last_error": (result.error or "")[:500]}
                report.retrying += 1
            session.execute(update(table).where(where).values(attempts=attempts, **values))
            metrics.count_sink_delivery(
                name, result.outcome if result.outcome != RETRY else "failed"
            )
            if result.error:
                sink_values.update(last_error=result.error[:500], last_error_at=now)
        # the events not tried (the receiver failed before them) wait as long as the
        # one that failed: a sink that is down is tried once per backoff, not per event
        untried = [item.waiting.id for item in claimed[len(results) :]]
        if untried:
            session.execute(
                update(table).where(table.c.id.in_(untried)).values(next_attempt_at=retry_at or now)
            )
        if "last_delivered_at" in sink_values and retry_at is None:
            # the receiver is back: its events waiting out a backoff go on the next pass,
            # not up to a minute later (a claim, LEASE ahead, is not a backoff)
            session.execute(
                update(table)
                .where(
                    table.c.sink_id == sink_id,
                    table.c.next_attempt_at > now,
                    table.c.next_attempt_at <= now + timedelta(seconds=LONGEST_RETRY),
                )
                .values(next_attempt_at=now)
            )
        if sink_values:  # on the connection: a delivery is no change to the sinks' list
            session.connection().execute(
                update(Sink.__table__).where(Sink.__table__.c.id == sink_id).values(**sink_values)
            )
        session.commit()


class Deliverer(Periodic):
    """Runs :func:`deliver_pass` on a daemon thread: again at once while sinks have
    whole batches due, else every :data:`INTERVAL` seconds. ``clock`` gives "now"."""

    what = "sink delivery"

    def __init__(
        self,
        sessions: sessionmaker,
        secret_key: str,
        interval: float = INTERVAL,
        clock: Callable[[], datetime] = utcnow,
        transport: Transport | None = None,
    ):
        super().__init__("tally-sinks", interval)
        self._sessions, self._secret_key = sessions, secret_key
        self._clock, self._transport = clock, transport or Transport()

    def run_pass(self) -> PassReport:
        """One pass over every sink's due events."""
        return deliver_pass(self._sessions, self._secret_key, self._transport, self._clock())

    def after_pass(self, report: PassReport) -> float | None:
        """Log what was parked; go again at once after a whole batch."""
        for line in report.lines:
            log.warning("sink delivery: %s", line)
        return 0.0 if report.full else None


def start_deliverer(sessions: sessionmaker, secret_key: str) -> Deliverer:
    """A background delivery loop for the process."""
    return Deliverer(sessions, secret_key).start()


class OnDemand:
    """The delivery loop of an app that writes its rows inline (``TALLY_USAGE_WRITES=
    inline``: no usage writer process, no background writer runs one): started by the
    first call written once a sink exists (:meth:`wake`, after each written call: a
    flag, or the outbox's cached list of sinks), stopped with the app's recorder."""

    def __init__(self, sessions: sessionmaker, secret_key: str):
        self._sessions, self._secret_key = sessions, secret_key
        self._lock = threading.Lock()
        self.loop: Deliverer | None = None
        self._closed = False

    def wake(self) -> None:
        """Start the loop if there is a sink and it is not running yet."""
        if self.loop is not None or self._closed:
            return
        try:
            if not any_sinks(self._sessions.kw["bind"]):
                return
        except SQLAlchemyError:  # the database went away: the next call asks again
            return
        with self._lock:
            if self.loop is None and not self._closed:
                self.loop = start_deliverer(self._sessions, self._secret_key)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop (after its current pass); it is not started again."""
        with self._lock:
            self._closed = True
            loop = self.loop
        if loop is not None:
            loop.stop(timeout)
