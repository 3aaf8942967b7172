"""Editing the price table (admins, on the console): a model's prices added, changed or
removed, each change in the audit log. How the table is used: tally.usage.costs."""

from __future__ import annotations

import math

from sqlalchemy import select
from sqlalchemy.orm import Session

from tally.audit import add_audit
from tally.db import utcnow
from tally.errors import InvalidInput
from tally.models import ModelPrice

FIELDS = ("prompt", "completion", "cached")  # USD per million tokens
MAX_MODEL = 255
MAX_PRICE = 1_000_000.0  # USD per million tokens: anything above is a typo


def list_prices(session: Session) -> list[ModelPrice]:
    """Every model's prices, by model name."""
    return list(session.scalars(select(ModelPrice).order_by(ModelPrice.model)))


def parse_model(raw: str | None) -> str:
    """A model name as the upstream spells it (``openai/gpt-4o-mini``)."""
    model = (raw or "").strip()
    if not model:
        raise InvalidInput("model must not be empty.", field="model")
    if len(model) > MAX_MODEL:
        raise InvalidInput(f"model must be at most {MAX_MODEL} characters.", field="model")
    return model


def parse_price(name: str, raw: str | None, optional: bool = False) -> float | None:
    """A price in USD per million tokens: a number from 0 up; ``optional`` ones may be
    blank (None: the cached price is then the prompt price)."""
    text = (raw or "").strip().removeprefix("$")
    if not text:
        if optional:
            return None
        raise InvalidInput(f"{name} price is required (USD per million tokens).", field=name)
    try:
        value = float(text)
    except ValueError:
        raise InvalidInput(f"{name} price must be a number, not {text!r}.", field=name) from None
    if not math.isfinite(value) or value < 0:
        raise InvalidInput(f"{name} price must be a number of 0 or more.", field=name)
    if value > MAX_PRICE:
        raise InvalidInput(f"{name} price must be at most {MAX_PRICE:,.0f} USD.", field=name)
    return value


def set_price(
    session: Session,
    model: str,
    prompt: float,
    completion: float,
    cached: float | None,
    actor: str,
) -> ModelPrice:
    """Add ``model``'s prices or change them; audited (before → after); commits."""
    row = session.scalar(select(ModelPrice).where(ModelPrice.model == model))
    before = _values(row) if row is not None else None
    if row is None:
        row = ModelPrice(model=model)
        session.add(row)
    row.prompt, row.completion, row.cached = prompt, completion, cached
    row.updated_at, row.updated_by = utcnow(), actor
    add_audit(session, actor, "price.set", model, before, _values(row))
    session.commit()
    return row


def remove_price(session: Session, model: str, actor: str) -> None:
    """Remove ``model`` from the table (its calls are then costed only by the upstream);
    audited; commits."""
    row = session.scalar(select(ModelPrice).where(ModelPrice.model == model))
    if row is None:
        raise InvalidInput(f"No price is set for {model!r}.", field="model")
    add_audit(session, actor, "price.remove", model, _values(row), None)
    session.delete(row)
    session.commit()


def _values(row: ModelPrice) -> dict[str, float | None]:
    return {name: getattr(row, name) for name in FIELDS}
