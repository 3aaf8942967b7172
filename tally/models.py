"""Tally's tables. The schema is made only by the alembic migrations in ``migrations/``;
``tests/test_migrations.py`` checks that these models and the migrations agree."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    cast,
    false,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tally.db import Base, utcnow
from tally.models_secrets import AdminToken as AdminToken  # re-exported: this file is full
from tally.models_secrets import MintedSecret
from tally.models_secrets import Sink as Sink
from tally.models_secrets import SinkEvent as SinkEvent


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


class Operator(Base):
    """A person who uses the console: role ``admin`` or ``support``."""

    __tablename__ = "operators"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime)
    # Part of every session cookie's user id; a new one (logout, password change,
    # disable) ends every copy of every session of this operator.
    session_nonce: Mapped[str] = mapped_column(String(32), default="", server_default="")


# The request log's partial indexes: their conditions, as tally/reports/requests.py's
# status filters write them on each database (migration 0012)
REQUEST_LOG_PARTIAL = {
    "errors": {
        "sqlite": "status >= 400 AND refused = 0",
        "postgresql": "status >= 400 AND refused = false",
    },
    "refused": {"sqlite": "refused = 1", "postgresql": "refused = true"},
}


class RequestLog(Base):
    """One API call that reached (or tried to reach) the upstream, or that Tally refused
    once its key was accepted (``refused``: a 400 or 429 of Tally's own, never sent
    upstream, counted by no limit); ``endpoint`` says which: ``chat.completions``,
    ``responses`` or ``embeddings``."""

    __tablename__ = "request_log"
    # (…, created_at, id): a user's recent requests, and the console's request log under
    # each filter (tally/reports/requests.py), newest first, read off an index (0012);
    # error answers and refusals, a few in a hundred, each have partial ones of their own
    __table_args__ = (
        Index("ix_request_log_user_created", "user_id", "created_at", "id"),
        Index("ix_request_log_api_key_id_created", "api_key_id", "created_at", "id"),
        Index("ix_request_log_model_created", "model", "created_at", "id"),
        Index("ix_request_log_endpoint_created", "endpoint", "created_at", "id"),
        *(
            Index(
                f"ix_request_log_{scope}{kind}_created",
                *columns,
                "created_at",
                "id",
                sqlite_where=text(where["sqlite"]),
                postgresql_where=text(where["postgresql"]),
            )
            for kind, where in REQUEST_LOG_PARTIAL.items()
            for scope, columns in (("", ()), ("user_", ("user_id",)))
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[str] = mapped_column(String(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("end_users.id", ondelete="SET NULL"))
    identifier_id: Mapped[int | None] = mapped_column(ForeignKey("upstream_identifiers.id"))
    endpoint: Mapped[str] = mapped_column(String(32), default="chat.completions")
    model: Mapped[str | None] = mapped_column(String(255))
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[int] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    total_tokens: Mapped[int | None] = mapped_column(Integer)
    cached_tokens: Mapped[int | None] = mapped_column(Integer)  # prompt tokens from a cache
    cost: Mapped[float | None] = mapped_column(Float)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    generation_id: Mapped[str | None] = mapped_column(String(255))
    is_demo: Mapped[bool] = mapped_column(Boolean, default=False)
    # upstream | price_table | estimated (awaiting the generation endpoint) | reconciled
    # (an estimate the generation endpoint's figures replaced) | None
    cost_source: Mapped[str | None] = mapped_column(String(16))
    reconcile_attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    reconcile_after: Mapped[datetime | None] = mapped_column(DateTime, index=True)
    # no Python default: an insert made at an earlier revision (migration tests) lacks it
    refused: Mapped[bool] = mapped_column(Boolean, server_default=false())

    user: Mapped[EndUser | None] = relationship()
    identifier: Mapped[UpstreamIdentifier | None] = relationship()
    api_key: Mapped[ApiKey | None] = relationship()


class AuditEntry(Base):
    """Who changed or looked at what: config changes, keys, operators, identity lookups."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str | None] = mapped_column(String(512))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)


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


class _Count(TypeDecorator):
    """A BIGINT count whose SUM reads back as an int: PostgreSQL sums a bigint into a
    numeric (a Decimal), and ``func.sum`` of a column keeps the column's type."""

    impl = BigInteger
    cache_ok = True

    def process_result_value(self, value, dialect):
        return None if value is None else int(value)


# A total's counts: 64 bits (a busy model passes 2**31 tokens a day). SQLite's INTEGER
# is 64 bits already; PostgreSQL's is 32, so there they are BIGINT (migration 0011).
Sum = _Count().with_variant(Integer(), "sqlite")


class _Sums:
    """What every totals table adds up: the request rows it counts. A refused call
    (``RequestLog.refused``) counts in ``refused`` alone: it is no request, no error."""

    requests: Mapped[int] = mapped_column(Sum, default=0)
    errors: Mapped[int] = mapped_column(Sum, default=0)  # status >= 400
    prompt_tokens: Mapped[int] = mapped_column(Sum, default=0)
    completion_tokens: Mapped[int] = mapped_column(Sum, default=0)
    cached_tokens: Mapped[int] = mapped_column(Sum, default=0)
    total_tokens: Mapped[int] = mapped_column(Sum, default=0)
    cost: Mapped[float] = mapped_column(Float, default=0.0)  # USD
    refused: Mapped[int] = mapped_column(Sum, default=0, server_default="0")


class DailyTotal(_Sums, Base):
    """The request log added up per UTC day x end user x API key x model x endpoint,
    kept in the transaction that inserts the rows (tally.usage.totals).

    A unique key over nullable columns never conflicts on NULL, so an absent user or key
    is stored as 0 and an absent model as '' (no row has id 0): anonymous traffic adds up
    in one row per day like any user's. Hence no foreign keys on ``user_id`` and
    ``api_key_id``: erasing a user later keeps the totals whole.
    """

    __tablename__ = "daily_totals"
    __table_args__ = (
        Index("ix_daily_totals_user_day", "user_id", "day"),
        # one API key's totals over a range (the usage page filtered by key; 0013)
        Index("ix_daily_totals_key_day", "api_key_id", "day"),
    )

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, primary_key=True)  # 0: anonymous
    api_key_id: Mapped[int] = mapped_column(Integer, primary_key=True)  # 0: none
    model: Mapped[str] = mapped_column(String(255), primary_key=True)  # '': unknown
    endpoint: Mapped[str] = mapped_column(String(32), primary_key=True)


class DailyModelTotal(_Sums, Base):
    """``daily_totals`` with the users folded in: a few rows a day, which the dashboard's
    and the usage page's totals, chart and per-model table read."""

    __tablename__ = "daily_model_totals"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    api_key_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[str] = mapped_column(String(255), primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(32), primary_key=True)


class MonthlyUserTotal(_Sums, Base):
    """``daily_totals`` per calendar month (``month`` is its first day) and end user,
    indexed by cost: the top users of a range are found from a few rows of each month it
    spans (tally.reports.ranking), not by adding up every user's days."""

    __tablename__ = "monthly_user_totals"
    __table_args__ = (
        Index("ix_monthly_user_totals_month_cost", "month", "cost"),
        # the users table sorted by requests (tally.reports.ranking, by="requests"; 0013)
        Index("ix_monthly_user_totals_month_requests", "month", "requests"),
    )

    month: Mapped[date] = mapped_column(Date, primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, primary_key=True)  # 0: anonymous


from tally.models_pricing import ModelPrice  # noqa: E402,F401 (one metadata, one import)
