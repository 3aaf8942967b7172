"""The price table, and where each call's cost comes from.

A call costs the upstream's ``usage.cost`` when the upstream reports it (OpenRouter
does): ``cost_source`` ``upstream``. Otherwise the model's row of the price table (USD
per million tokens, edited by admins on the console) prices its tokens:
``(prompt - cached) x prompt price + cached x cached price + completion x completion
price``, with the prompt price for cached tokens when the row names none: ``price_table``.
A stream that ended before its usage arrived (cut by either side) is ``estimated``: its
prompt's tokens and one per content event relayed (tally.proxy.call), at the price
table's price, or the model's largest cost of one call when it has none; an OpenRouter
stream's estimate is replaced by the generation's own figures when the reconciler
(tally.usage.reconcile) fetches them. No figure at all: ``cost_source`` null.

The cost is settled in the worker when the call ends (:func:`settle_cost`), so the request
row, the daily totals and the budget counters all get the same figure. The table is read
through the runtime's versioned cache (tally.cache): no query per request, and a change
applies on every worker and instance within a second.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tally.cache import Cache
from tally.models import ModelPrice
from tally.usage.call import ESTIMATED, PRICE_TABLE, UPSTREAM, Outcome
from tally.usage.numbers import as_float, count

log = logging.getLogger(__name__)
PER = 1_000_000  # prices are per million tokens
CACHE_KEY = "prices"


@dataclass(frozen=True)
class Price:
    """One model's prices in USD per million tokens (``cached`` None: the prompt price)."""

    prompt: float
    completion: float
    cached: float | None = None

    def cost(self, usage: dict[str, Any] | None) -> float | None:
        """What ``usage``'s tokens cost at these prices (None without any token count)."""
        usage = usage or {}
        prompt, completion = (
            count(usage.get("prompt_tokens")),
            count(usage.get("completion_tokens")),
        )
        if prompt is None and completion is None:
            return None
        prompt, completion = prompt or 0, completion or 0
        cached = min(count(usage.get("cached_tokens")) or 0, prompt)
        cached_rate = self.prompt if self.cached is None else self.cached
        total = (
            (prompt - cached) * self.prompt + cached * cached_rate + completion * self.completion
        )
        return total / PER


def load_prices(session: Session) -> dict[str, Price]:
    """The whole price table, by model."""
    rows = session.scalars(select(ModelPrice))
    return {row.model: Price(row.prompt, row.completion, row.cached) for row in rows}


def cached_prices(cache: Cache, sessions: sessionmaker) -> dict[str, Price]:
    """The price table through ``cache`` (reloaded when a change bumped the cache version,
    and at least every second); a session is opened only to reload."""

    def load() -> dict[str, Price]:
        with sessions() as session:
            return load_prices(session)

    return cache.get(CACHE_KEY, load)


def settle_cost(
    outcome: Outcome,
    models: tuple[str | None, ...],
    prices: Callable[[], dict[str, Price]],
    estimate: bool = False,
) -> None:
    """Fill in ``outcome``'s cost and ``cost_source``. ``models``: the names to look the
    price up by, first match wins (the model the upstream answered with, then the one
    asked for); ``prices`` is called only when the table is needed. ``estimate``: the
    call's final figures are to come from the upstream later (an OpenRouter stream cut
    before its usage). A price table that cannot be read (database down) prices nothing:
    the answer is on its way, and the cost stays unknown rather than failing it."""
    usage = outcome.usage
    if not estimate and usage is not None and as_float(usage.get("cost")) is not None:
        outcome.cost_source = UPSTREAM
        return
    cost = None
    if estimate or (usage is not None and _has_tokens(usage)):
        try:
            table = prices()
        except Exception:
            log.warning("price table unavailable; a call is left without a cost")
            table = {}
        price = next((table[m] for m in models if m and m in table), None)
        cost = price.cost(usage) if price is not None else None
    if estimate:
        outcome.cost_source = ESTIMATED
    elif cost is not None:
        outcome.cost_source = PRICE_TABLE
    else:
        return
    outcome.usage = {**(usage or {}), "cost": cost}


def _has_tokens(usage: dict[str, Any]) -> bool:
    return any(count(usage.get(k)) is not None for k in ("prompt_tokens", "completion_tokens"))
