"""Where the pipeline hands each finished call: the :class:`Recorder` protocol, and
:class:`InlineRecorder`, which writes each row at once (tally.usage.records); the other
recorder is the background writer (tally.usage.writer.background)."""

from __future__ import annotations

import logging
from typing import Protocol

from sqlalchemy.orm import sessionmaker

from tally.metrics import count_calls
from tally.usage.call import CallRecord, Outcome
from tally.usage.records import record_call

# as when this was in tally.usage.records: its log lines keep their logger name
log = logging.getLogger("tally.usage.records")


class Recorder(Protocol):
    """Where the pipeline hands each finished call (:class:`InlineRecorder`, or the
    background writer in tally.usage.writer.background)."""

    def submit(self, call: CallRecord, outcome: Outcome) -> None:
        """Take one finished call's row; never raise into the answer."""

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every row taken so far is written; False if that took too long."""

    def close(self, timeout: float = 30.0) -> None:
        """Write what is left; the process is ending."""

    def wake_deliveries(self) -> None:
        """Events were queued for the sinks without a call (a replay, a new sink): see
        that something will deliver them."""


class InlineRecorder:
    """Writes each finished call's row at once, in its own session (tests, and a
    deployment set to ``TALLY_USAGE_WRITES=inline``); the background writer
    (tally.usage.writer.background) is the other recorder, with the same two methods."""

    def __init__(self, sessions: sessionmaker, on_written=None, deliveries=None):
        self.sessions = sessions
        self.on_written = on_written  # given each call once written (the limits' alerts)
        # the sinks' delivery loop (tally.sinks.delivery.OnDemand): woken by each written
        # call, started once a sink exists, stopped by close
        self.deliveries = deliveries

    def submit(self, call: CallRecord, outcome: Outcome) -> None:
        """Record one finished call (and count it in the metrics); a database failure is
        logged, never raised into a response that is already on its way to the client."""
        count_calls([(call, outcome, None)])
        with self.sessions() as session:
            try:
                record_call(session, call, outcome)
            except Exception:
                session.rollback()
                log.exception("could not record request %s", call.request_id)
                return
        if self.on_written is not None:
            self.on_written([(call, outcome, None)])
        if self.deliveries is not None:
            self.deliveries.wake()

    def flush(self, timeout: float = 10.0) -> bool:
        """Every row is already written."""
        return True

    def wake_deliveries(self) -> None:
        """Start the delivery loop if a sink exists (a replay queued events before any
        call did)."""
        if self.deliveries is not None:
            self.deliveries.wake()

    def close(self, timeout: float = 30.0) -> None:
        """Nothing is queued: nothing to write before the process ends; the delivery
        loop, if any, stops after its pass."""
        if self.deliveries is not None:
            self.deliveries.stop(min(timeout, 5.0))
