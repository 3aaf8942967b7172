"""The console's words for values: the template filters every page shows money, counts,
times and stored values with, and the one placeholder for nothing."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

# The one placeholder for nothing (no value, no cost, never), on every page.
NOTHING = "–"


def money(value: float | None) -> str:
    """Dollars, the one way the console shows a cost, a budget or a price: cents from
    $1 up (``$1,234.56``), up to four decimals below (``$0.4721``, ``$0.50``), and two
    significant digits under a cent (``$0.000088``): a cost that is not zero never
    reads ``$0.00``. Nothing is ``–``."""
    if value is None:
        return NOTHING
    amount = float(value)
    sign, amount = ("-" if amount < 0 else ""), abs(amount)
    if amount == 0:
        return "$0.00"
    if amount >= 1:
        return f"{sign}${amount:,.2f}"
    if amount >= 0.01:
        decimals = 4
    elif amount < 1e-12:
        return f"{sign}<$0.000000000001"
    else:  # two significant digits
        decimals = 1 - math.floor(math.log10(amount))
    whole, _, fraction = f"{amount:.{decimals}f}".partition(".")
    fraction = fraction.rstrip("0").ljust(2, "0")
    return f"{sign}${whole}.{fraction}"


def count(value: int | float | None) -> str:
    """A whole number with thousands separators."""
    return NOTHING if value is None else f"{int(value):,}"


def when(value: datetime | None) -> str:
    """A stored (naive UTC) time, to the minute."""
    return NOTHING if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


def shown(value: Any) -> str:
    """A stored value as a person reads it: ``–`` for nothing (none, an empty string or
    list), ``yes`` / ``no``, a list's items joined by commas, a mapping as ``k=v``."""
    if value is None or value == "" or value == [] or value == {}:
        return NOTHING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(shown(item) for item in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={shown(v)}" for k, v in value.items())
    return str(value)
