"""End users and what Tally sends upstream for them: the end users, the tracking config's
revisions, the identifiers sent (each under a revision), and the identity provider whose
tokens say who an end user is."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    cast,
    false,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tally.db import Base, utcnow


class EndUser(Base):
    """An end user of the company's product, known by the id its backend sends."""

    __tablename__ = "end_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    external_id: Mapped[str] = mapped_column(String(255), unique=True)
    display_name: Mapped[str | None] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(320))
    profile_metadata: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    tags: Mapped[list[str] | None] = mapped_column(JSON)
    logo_url: Mapped[str | None] = mapped_column(String(2048))
    first_seen: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    is_demo: Mapped[bool] = mapped_column(Boolean, default=False)
    # Seen with a verified end-user token at least once (tally.verification.tokens).
    verified: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    identifiers: Mapped[list[UpstreamIdentifier]] = relationship(back_populates="user")


# The tag and metadata breakdowns group users by their profile as stored JSON text
# (tally/reports/breakdown_users.py; migration 0007).
Index("ix_end_users_tags_text", cast(EndUser.__table__.c.tags, Text))
Index("ix_end_users_metadata_text", cast(EndUser.__table__.c.profile_metadata, Text))


# The identity search's "contains" on e-mail and name (lower(x) LIKE '%q%'): trigram
# indexes on PostgreSQL (pg_trgm, made by migration 0005). SQLite has none; it reads the
# users table through (a scan of some 40 ms at 100,000 users).
for _column in ("email", "display_name"):
    Index(
        f"ix_end_users_{_column}_trgm",
        func.lower(EndUser.__table__.c[_column]).label(f"{_column}_lower"),
        postgresql_using="gin",
        postgresql_ops={f"{_column}_lower": "gin_trgm_ops"},
    ).ddl_if(dialect="postgresql")


class ConfigRevision(Base):
    """One saved tracking config. The newest revision is the active one."""

    __tablename__ = "config_revisions"

    id: Mapped[int] = mapped_column(primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    prefix: Mapped[str] = mapped_column(String(64))
    hash_mode: Mapped[str] = mapped_column(String(16))
    hash_length: Mapped[int] = mapped_column(Integer)
    dialect: Mapped[str] = mapped_column(String(16))
    cache_key: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    forward_profile: Mapped[bool] = mapped_column(Boolean)
    require_identity: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(320))
    comment: Mapped[str | None] = mapped_column(String(500))


class UpstreamIdentifier(Base):
    """An identifier Tally has sent upstream for one end user, kept forever so old logs
    still resolve. Two users whose ids collide (a short ``hash_length``) each get a row
    of the same identifier: the key is (identifier, user), and its index serves every
    lookup by identifier (exact, or a prefix range) as a unique one did (migration 0009)."""

    __tablename__ = "upstream_identifiers"
    __table_args__ = (UniqueConstraint("identifier", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    identifier: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[int] = mapped_column(ForeignKey("end_users.id", ondelete="CASCADE"), index=True)
    revision_id: Mapped[int | None] = mapped_column(ForeignKey("config_revisions.id"))
    first_seen: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    request_count: Mapped[int] = mapped_column(Integer, default=0)

    user: Mapped[EndUser] = relationship(back_populates="identifiers")
    revision: Mapped[ConfigRevision | None] = relationship()


class IdentityProviderConfig(Base):
    """The identity provider end-user tokens are verified against (one row, id 1)."""

    __tablename__ = "identity_providers"

    id: Mapped[int] = mapped_column(primary_key=True)
    issuer: Mapped[str] = mapped_column(String(2048))
    jwks_url: Mapped[str] = mapped_column(String(2048))
    audience: Mapped[str] = mapped_column(String(2048), default="")
    user_claim: Mapped[str] = mapped_column(String(255), default="sub")
    name_claim: Mapped[str] = mapped_column(String(255), default="")
    email_claim: Mapped[str] = mapped_column(String(255), default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(320))
