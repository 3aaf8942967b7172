"""Usage events out (PRODUCT.md, "Usage events out"; migration 0014): the sinks, whose
secret is stored encrypted, and their outbox."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tally.db import Base, utcnow


class Sink(Base):
    """A receiver of events: ``kind`` says how they are sent, ``events`` which (``usage``,
    ``alerts``). The secret is stored encrypted (Fernet, a key derived from
    TALLY_SECRET_KEY: tally.sinks.secrets), since signing needs it back; it is shown
    once, when made, and nowhere after."""

    __tablename__ = "sinks"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    url: Mapped[str] = mapped_column(String(2048))
    secret_encrypted: Mapped[str | None] = mapped_column(Text)
    events: Mapped[str] = mapped_column(String(32))  # "usage", "alerts" or "usage,alerts"
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(320))
    last_delivered_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str | None] = mapped_column(String(500))
    last_error_at: Mapped[datetime | None] = mapped_column(DateTime)


class SinkEvent(Base):
    """One event for one sink, until delivered: ``event_id`` (a request id,
    ``<request id>.corrected``, an alert's key) is unique per sink, so a replayed batch
    adds nothing. ``next_attempt_at`` is set while it waits (null once delivered or
    parked): the delivery loop's claim reads the ``(sink_id, next_attempt_at)`` index."""

    __tablename__ = "sink_events"
    __table_args__ = (
        UniqueConstraint("sink_id", "event_id", name="uq_sink_events_sink_event"),
        Index("ix_sink_events_due", "sink_id", "next_attempt_at"),
        Index("ix_sink_events_parked", "sink_id", "parked_at"),
        Index("ix_sink_events_delivered", "delivered_at"),  # usage prune
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    sink_id: Mapped[int] = mapped_column(ForeignKey("sinks.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(300))
    type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime)
    parked_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str | None] = mapped_column(String(500))
