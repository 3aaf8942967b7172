"""What a call is expected to use, reserved against token limits and budgets while it is
in flight (PRODUCT.md, Limits: "Many calls at once"), and each model's peaks that the
reservation falls back on.

The proxy estimates a call before it goes upstream (:class:`Demand`: the prompt's
tokens from its text, the completion's cap when the request sets one, the model's
price); the admission's plan turns it into the amounts held
(tally.limits.engine.reservation), reading the model's peaks (the largest completion and
the largest cost of one call, per UTC day, today's and yesterday's) in the same atomic
step. Peaks are kept while some policy sets a token limit or a budget: raised by every
call's settlement, and rebuilt from the request log like the counters (a restart, or
the first budget set).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

from tally.limits.checks import NANO, SLACK, marker_of, periods

# seconds a reservation lives at most: a call that never settles (its worker killed)
# frees what it held after this; longer than any answer Tally waits for in practice
LEASE = 3600
PER = 1_000_000  # prices are per million tokens


@dataclass(frozen=True)
class Demand:
    """One call's expected use, as the proxy estimates it before forwarding."""

    request_id: str
    model: str | None
    prompt_tokens: int  # estimated from the request's text
    completion_cap: int | None  # max_tokens / max_output_tokens, when given
    price: tuple[float, float] | None  # the model's USD per million prompt, completion tokens

    def as_plan(self, now: float) -> dict[str, Any]:
        """The demand as the plan runners read it (tally.limits.engine.reservation)."""
        price = None
        if self.price is not None:
            prompt, completion = self.price
            price = [math.ceil(self.prompt_tokens * prompt * NANO / PER), completion * NANO / PER]
        return {
            "id": call_id(self.request_id),
            "lease": LEASE,
            "prompt": self.prompt_tokens,
            "completion": -1 if self.completion_cap is None else self.completion_cap,
            "price": price,
            "peaks": peak_keys(self.model or "", now),
        }


def call_id(request_id: str) -> int:
    """A call's id in the reservations: 48 bits (exact in a double, and in Lua)."""
    return int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=6).digest(), "big")


def peak_keys(model: str, now: float) -> list[str]:
    """The model's peaks read by a reservation: tokens today, yesterday, then cost."""
    today, yesterday = _day(now), _day(now - 86400)
    return [
        f"tally/peak/tok/{today}/{model}",
        f"tally/peak/tok/{yesterday}/{model}",
        f"tally/peak/usd/{today}/{model}",
        f"tally/peak/usd/{yesterday}/{model}",
    ]


def peak_marker(model: str, stamp: int) -> str:
    """The rebuild marker of a model's peaks (rebuilt with the counters)."""
    return marker_of(f"tally/peak/{model}", stamp)


def peak_entries(model: str, completion: int, nano: int, now: float) -> list[list[Any]]:
    """A finished call's ``[key, expiry, value]`` raises of its model's peaks today."""
    _part, _start, end = periods(now)["day"]
    expiry = int(end + 86400 - now) + SLACK  # read as yesterday's all of tomorrow
    keys = peak_keys(model, now)
    return [[keys[0], expiry, completion], [keys[2], expiry, nano]]


def _day(now: float) -> str:
    return periods(now)["day"][0]
