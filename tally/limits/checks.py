"""The counters behind each limit field, and the checks one request makes.

Counter keys (the same in every storage):

- ``tally/msg/<subject>``: moving window of the last 24 h (``messages``);
- ``tally/rpm/<subject>``: moving window of the last 60 s (``rpm``);
- ``tally/tok/<period>/<subject>`` and ``tally/usd/<period>/<subject>``: tokens and
  cost (nano-dollars, so cost is an integer) of the UTC day (``d2026-11-30``) or the
  calendar month (``m2026-11``), expiring an hour after their period ends.

Subjects: ``user:<internal id>``, ``anon:<key id>`` (anonymous requests of one key),
``key:<key id>`` (the key as a whole).
"""

from __future__ import annotations

import calendar
import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tally.errors import BudgetExceeded, RateLimited
from tally.limits.policy import BUDGET_FIELDS, FIELDS, Applicable, format_value

NANO = 1_000_000_000
WINDOWS = {"messages": ("msg", 86400), "rpm": ("rpm", 60)}
SLACK = 3600  # seconds a period's counter outlives the period


@dataclass(frozen=True)
class Check:
    """One limit one request is held to."""

    field: str
    subject: str
    kind: str  # "window" or "counter"
    key: str
    limit: int  # hits, tokens, or nano-dollars
    expiry: int  # windows: their length (counters: see ttl)
    reset: float = 0.0  # counters: when the period ends (epoch seconds)
    since: float = 0.0  # counters: when the period starts (windows: see start)
    label: str = ""
    stamp: int = 0  # the policies' last change (Policies.stamp): a new one rebuilds it

    def ttl(self, now: float) -> int:
        """Seconds a counter made now lives: a window's length, or until an hour after
        the counter's period ends."""
        return self.expiry if self.kind == "window" else int(self.reset - now) + SLACK

    def start(self, now: float) -> float:
        """Where the window or period holding ``now`` starts (rebuilding from the log)."""
        return now - self.expiry if self.kind == "window" else self.since

    @property
    def unit(self) -> str:
        """``usd`` for budgets, ``tokens`` or ``requests`` for the rest."""
        if self.field in BUDGET_FIELDS:
            return "usd"
        return "tokens" if self.kind == "counter" else "requests"

    @property
    def marker(self) -> str:
        """Set once the counter has been rebuilt from the request log since the storage
        started and the policies last changed (:func:`marker_of`)."""
        return marker_of(self.key, self.stamp)

    def as_plan(self) -> dict[str, Any]:
        """The check as the engine (maybe as a Redis script) reads it."""
        return {
            "kind": self.kind,
            "unit": self.unit,
            "key": self.key,
            "limit": self.limit,
            "expiry": self.expiry,
            "reset": self.reset,
        }

    @functools.cached_property
    def limit_text(self) -> str:
        """The limit as a header shows it (worked out once: a check lives all day)."""
        return self.display(self.limit)

    def amount(self, amount: float) -> float | int:
        """An amount of this limit in its own unit: dollars for budgets (the counters
        hold nano-dollars), a whole number of tokens or requests for the rest."""
        return amount / NANO if self.unit == "usd" else int(amount)

    def display(self, amount: float) -> str:
        """An amount of this limit as a header shows it (dollars for budgets)."""
        if self.unit == "usd":
            return format_value(self.field, amount / NANO)
        return str(int(amount))

    def describe(self, limit: str) -> str:
        """``The daily budget of $2 for this user``, for a refusal's message."""
        what = {
            "messages": f"The message quota of {limit} requests per rolling 24 hours",
            "rpm": f"The rate limit of {limit} requests per minute",
            "daily_tokens": f"The daily limit of {limit} tokens (UTC day)",
            "monthly_tokens": f"The monthly limit of {limit} tokens (calendar month, UTC)",
            "daily_budget": f"The daily budget of ${limit} (UTC day)",
            "monthly_budget": f"The monthly budget of ${limit} (calendar month, UTC)",
        }[self.field]
        return f"{what} {self.label}"


def marker_of(key: str, stamp: int) -> str:
    """The rebuild marker of counter ``key`` under the policies of ``stamp``: a limit set
    (again) changes the stamp, so its counter is rebuilt from the log and counts its
    whole window, what was sent while it was off included."""
    return f"{key}/seeded/{stamp}"


def periods(now: float) -> dict[str, tuple[str, float, float]]:
    """``day``/``month`` -> (key part, start, end) in epoch seconds, UTC."""
    return _periods_of_day(int(now // 86400))


@functools.lru_cache(maxsize=4)
def _periods_of_day(day: int) -> dict[str, tuple[str, float, float]]:
    """:func:`periods` of the UTC day ``day`` (days since the epoch): the same all day."""
    moment = datetime.fromtimestamp(day * 86400, UTC)
    day_start = datetime(moment.year, moment.month, moment.day, tzinfo=UTC).timestamp()
    month_start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
    days = calendar.monthrange(moment.year, moment.month)[1]
    return {
        "day": (f"d{moment:%Y-%m-%d}", day_start, day_start + 86400),
        "month": (
            f"m{moment:%Y-%m}",
            month_start.timestamp(),
            month_start.timestamp() + days * 86400,
        ),
    }


def check_for(name: str, value: Any, subject: str, label: str, spans, stamp: int = 0) -> Check:
    """The check of field ``name`` limited to ``value`` for ``subject``."""
    if name in WINDOWS:
        part, length = WINDOWS[name]
        key = f"tally/{part}/{subject}"
        return Check(name, subject, "window", key, int(value), length, label=label, stamp=stamp)
    part, start, end = spans["day" if name.startswith("daily") else "month"]
    unit = "usd" if name in BUDGET_FIELDS else "tok"
    limit = round(float(value) * NANO) if unit == "usd" else int(value)
    key = f"tally/{unit}/{part}/{subject}"
    return Check(name, subject, "counter", key, limit, 0, end, start, label, stamp)


def build_checks(scope: Applicable, key_id: int, now: float, stamp: int = 0) -> list[Check]:
    """Every limit of the end user (or anonymous bucket) and of the key that is set: the
    same all UTC day (nothing in a check depends on the time of day)."""
    spans = periods(now)
    subject_label = (
        "for this user"
        if scope.subject.startswith("user:")
        else ("for anonymous requests of this API key")
    )
    checks = []
    for limits, subject, label in (
        (scope.subject_limits, scope.subject, subject_label),
        (scope.key_limits or {}, f"key:{key_id}", "for this API key as a whole"),
    ):
        for name in FIELDS:
            if limits.get(name) is not None:
                checks.append(check_for(name, limits[name], subject, label, spans, stamp))
    return checks


def subject_keys(subject: str, now: float) -> list[str]:
    """Every counter ``subject`` may have now (what a reset clears)."""
    spans = periods(now)
    keys = [f"tally/msg/{subject}", f"tally/rpm/{subject}"]
    for part, _start, _end in spans.values():
        keys += [f"tally/tok/{part}/{subject}", f"tally/usd/{part}/{subject}"]
    return keys


def refusal(check: Check, stats: list[float], now: float, headers: dict[str, str]):
    """The 429 for a request ``check`` refused (``stats``: its reset and remaining)."""
    reset_at = int(stats[0] + 1)
    retry = max(1, int(reset_at - now))
    when = datetime.fromtimestamp(reset_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    limit = check.display(check.limit)
    message = (
        f"{check.describe(limit)} is used up. It frees up in {_duration(retry)} "
        f"(at {when}); retry after {retry} seconds."
    )
    kind = BudgetExceeded if check.field.endswith("_budget") else RateLimited
    return kind(message, retry_after=retry, headers=dict(headers))


def _duration(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours} h" if hours else "", f"{minutes} min" if minutes else ""]
    parts.append(f"{secs} s" if secs or not (hours or minutes) else "")
    return " ".join(p for p in parts if p)
