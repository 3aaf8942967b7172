"""The limits' policies and settings, and when a subject's counters were last cleared."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from tally.db import Base, utcnow


class LimitPolicy(Base):
    """One limit policy: a tier, a user override or a key (tenant); ``fields`` maps
    field names to limits (null = no limit; a user override omits what it inherits)."""

    __tablename__ = "limit_policies"

    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(300), unique=True)
    fields: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(320))


class LimitSetting(Base):
    """A named setting of the limits: ``tier_key``, and ``changed_at`` (when any policy
    last changed, epoch ms: tally.limits.policy.Policies.stamp)."""

    __tablename__ = "limit_settings"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    value: Mapped[str] = mapped_column(String(255))


class LimitReset(Base):
    """When a subject's counters were last cleared: counters rebuilt from the request
    log after a restart count only what came after."""

    __tablename__ = "limit_resets"

    id: Mapped[int] = mapped_column(primary_key=True)
    subject: Mapped[str] = mapped_column(String(300), unique=True)
    reset_at: Mapped[datetime] = mapped_column(DateTime)
