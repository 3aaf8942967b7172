"""Usage: the request log (every call, served or refused), its totals per day and per month
(tally.usage.totals keeps them in the transaction that writes the rows), and the price
table that costs a call whose upstream did not."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
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
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tally.db import Base, utcnow
from tally.models.end_users import EndUser, UpstreamIdentifier
from tally.models.keys import ApiKey

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


class ModelPrice(Base):
    """What one model costs, in USD per million tokens: prompt, completion, and cached
    prompt tokens (``cached`` null: the prompt price). Costs a call whose upstream did
    not report ``usage.cost`` (tally.usage.costs)."""

    __tablename__ = "model_prices"

    id: Mapped[int] = mapped_column(primary_key=True)
    model: Mapped[str] = mapped_column(String(255), unique=True)
    prompt: Mapped[float] = mapped_column(Float)
    completion: Mapped[float] = mapped_column(Float)
    cached: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(320))
