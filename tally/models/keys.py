"""Bearer secrets shown once, of which only a hash is kept: the API keys (an end user's own,
when bound) and the admin API tokens (migration 0008)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, String, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tally.db import Base, utcnow
from tally.models.end_users import EndUser


class MintedSecret:
    """A named bearer secret shown once: only its SHA-256 is stored (in the table's own
    hash column); ``display_prefix`` tells it apart on a list."""

    name: Mapped[str] = mapped_column(String(100), unique=True)
    display_prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(320))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)


class ApiKey(MintedSecret, Base):
    """A Tally API key. Only the SHA-256 of the secret is stored."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    bound_user_id: Mapped[int | None] = mapped_column(ForeignKey("end_users.id"))
    # Calls need a verified end-user token (X-Tally-User-Token); origins get CORS.
    user_token: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    origins: Mapped[list[str] | None] = mapped_column(JSON)

    bound_user: Mapped[EndUser | None] = relationship()


class AdminToken(MintedSecret, Base):
    """A bearer token for ``/admin/api/…`` (reading usage), made by an admin on the
    console; ``last_used_at`` is touched at most once a minute."""

    __tablename__ = "admin_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
