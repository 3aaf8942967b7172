"""Minted secrets' tables: the columns that API keys (tally.models.ApiKey) and admin API
tokens share, and the admin tokens' table (migration 0008). Kept beside tally/models.py,
which re-exports :class:`AdminToken`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from tally.db import Base, utcnow


class MintedSecret:
    """A named bearer secret shown once: only its SHA-256 is stored (in the table's own
    hash column); ``display_prefix`` tells it apart on a list."""

    name: Mapped[str] = mapped_column(String(100), unique=True)
    display_prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(320))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)


class AdminToken(MintedSecret, Base):
    """A bearer token for ``/admin/api/…`` (reading usage), made by an admin on the
    console; ``last_used_at`` is touched at most once a minute."""

    __tablename__ = "admin_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
