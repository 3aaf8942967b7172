"""Numbers as the request log stores them, from whatever an upstream's JSON holds."""

from __future__ import annotations

import math
from typing import Any

# The token columns are INTEGER: 32 bits on PostgreSQL. A count past it is no count an
# upstream really made; stored, it would fail the whole batch, and the row would be lost.
MAX_COUNT = 2**31 - 1


def count(value: Any) -> int | None:
    """A token count as the request log stores it (None unless a number a column holds)."""
    if type(value) is int:  # what upstreams send: four a row, decided without the rest
        return value if -MAX_COUNT <= value <= MAX_COUNT else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return int(value) if -MAX_COUNT <= value <= MAX_COUNT else None


def as_float(value: Any) -> float | None:
    """A cost as the request log stores it: a finite number, or text that is one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None
