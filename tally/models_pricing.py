"""The per-model price table (beside tally.models, which imports it: one metadata)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Float, String
from sqlalchemy.orm import Mapped, mapped_column

from tally.db import Base, utcnow


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
