"""Limit policies: their fields, their scopes, and which ones apply to a request.

A policy maps fields to limits (``None`` = no limit). Tiers and keys hold every field;
a user override holds only the fields it sets and inherits the rest from the user's
tier. Pure functions: no database, no clock.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from tally.errors import InvalidInput

FIELDS = ("messages", "rpm", "daily_tokens", "monthly_tokens", "daily_budget", "monthly_budget")
COUNT_FIELDS = frozenset({"messages", "rpm", "daily_tokens", "monthly_tokens"})
BUDGET_FIELDS = frozenset({"daily_budget", "monthly_budget"})
COUNTER_FIELDS = ("daily_tokens", "monthly_tokens", "daily_budget", "monthly_budget")
DEFAULT_TIER = "tier:default"
ANONYMOUS_TIER = "tier:anonymous"
DEFAULT_TIER_KEY = "plan"
SHIPPED_DEFAULT: dict[str, Any] = {name: None for name in FIELDS} | {"messages": 1000}
SCOPE_KINDS = ("tier", "user", "key")
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_TIER_KEY = re.compile(r"[A-Za-z0-9._-]{1,64}")
MAX_COUNT = 10**15
MAX_BUDGET = Decimal("1000000000")


class PolicyError(InvalidInput):
    """A scope, field or value that is not acceptable (one line, for the CLI and forms)."""


@dataclass(frozen=True)
class Policies:
    """Every stored policy, keyed by scope, and the metadata key that picks a tier."""

    by_scope: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    tier_key: str = DEFAULT_TIER_KEY
    resets: Mapping[str, float] = field(default_factory=dict)  # subject -> epoch seconds
    # when any policy last changed (epoch ms; 0: never): the counters' rebuild markers
    # carry it, so a limit set again is rebuilt from the log (tally.limits.checks.marker_of)
    stamp: int = 0
    # what callers derive from these policies and keep while they hold (a new Policies
    # comes with every change): tally.limits.admission keeps each request kind's checks
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    def tier(self, scope: str) -> dict[str, Any] | None:
        """A tier's full field set (the shipped default for an unset tier:default)."""
        stored = self.by_scope.get(scope)
        if stored is None:
            return dict(SHIPPED_DEFAULT) if scope == DEFAULT_TIER else None
        return {name: stored.get(name) for name in FIELDS}

    def all_scopes(self) -> list[str]:
        """tier:default first, then tiers, users and keys, each sorted by name."""
        scopes = set(self.by_scope) | {DEFAULT_TIER}
        order = {kind: i for i, kind in enumerate(SCOPE_KINDS)}
        return sorted(
            scopes, key=lambda s: (s != DEFAULT_TIER, order.get(s.partition(":")[0], 9), s)
        )

    @functools.cached_property
    def has_counters(self) -> bool:
        """True when some policy sets a token limit or a budget (then calls reserve, and
        each model's peaks are kept: tally.limits.engine.reservation)."""
        fields = [*self.by_scope.values(), self.tier(DEFAULT_TIER) or {}]
        return any(f.get(n) is not None for f in fields for n in COUNTER_FIELDS)

    def has_named_tiers(self) -> bool:
        """True when a tier other than default and anonymous exists (then a user's
        metadata must be read to place them)."""
        return self.named_tiers

    @functools.cached_property
    def named_tiers(self) -> bool:
        """:meth:`has_named_tiers`, worked out once."""
        return any(
            s.startswith("tier:") and s not in (DEFAULT_TIER, ANONYMOUS_TIER) for s in self.by_scope
        )


@dataclass(frozen=True)
class Applicable:
    """The limits that gate one request: the end user's (or the anonymous bucket's)
    effective policy, and the key's own policy (the tenant as a whole)."""

    subject: str  # counter scope: "user:ID" or "anon:KEY_ID"
    subject_limits: dict[str, Any]
    tier: str
    key_scope: str | None  # "key:NAME" when that key has a policy
    key_limits: dict[str, Any] | None


def parse_scope(text: str) -> str:
    """``tier:NAME``, ``user:INTERNAL_ID`` or ``key:KEY_NAME``, checked."""
    kind, sep, name = text.partition(":")
    if not sep or kind not in SCOPE_KINDS:
        raise PolicyError(f"unknown scope {text!r}; use tier:NAME, user:INTERNAL_ID or key:NAME")
    if kind == "user":
        if not 1 <= len(name) <= 255:
            raise PolicyError("user:INTERNAL_ID needs an id of 1 to 255 characters")
    elif kind == "key":
        if not 1 <= len(name) <= 100:
            raise PolicyError("key:NAME needs a key name of 1 to 100 characters")
    elif not _NAME.fullmatch(name):
        raise PolicyError(f"tier names are 1-64 of [A-Za-z0-9._-], got {name!r}")
    return f"{kind}:{name}"


def parse_value(name: str, raw: str) -> int | float | None:
    """One field's value: ``none``, a whole number (counts) or dollars (budgets)."""
    if name not in FIELDS:
        raise PolicyError(f"unknown field {name!r}; fields are {', '.join(FIELDS)}")
    text = raw.strip().lower()
    if text == "none":
        return None
    if name in COUNT_FIELDS:
        if not text.isdigit() or int(text) > MAX_COUNT:
            raise PolicyError(f"{name} must be a whole number >= 0 or none, got {raw!r}")
        return int(text)
    try:
        amount = Decimal(text.lstrip("$"))
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite() or amount < 0 or amount > MAX_BUDGET:
        raise PolicyError(f"{name} must be an amount in USD >= 0 or none, got {raw!r}")
    return float(amount)


def parse_assignments(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``FIELD=VALUE`` items into a field map; at least one, each field once."""
    if not items:
        raise PolicyError("expected at least one FIELD=VALUE")
    fields: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep:
            raise PolicyError(f"expected FIELD=VALUE, got {item!r}")
        fields[name.strip()] = parse_value(name.strip(), raw)
    return fields


def parse_tier_key(raw: str) -> str:
    """The identity metadata key whose value names a user's tier."""
    if not _TIER_KEY.fullmatch(raw):
        raise PolicyError(f"tier_key must be 1-64 of [A-Za-z0-9._-], got {raw!r}")
    return raw


def format_value(name: str, value: Any) -> str:
    """``none``, a whole number, or dollars without trailing zeros (``2``, ``0.5``)."""
    if value is None:
        return "none"
    if name in BUDGET_FIELDS:
        text = f"{float(value):.6f}".rstrip("0").rstrip(".")
        return text or "0"
    return str(int(value))


def format_policy(scope: str, fields: Mapping[str, Any]) -> str:
    """``SCOPE FIELD=VALUE …`` in field order: every field for tiers and keys, the
    fields it sets for a user override."""
    names = [n for n in FIELDS if n in fields] if scope.startswith("user:") else list(FIELDS)
    return " ".join([scope, *(f"{n}={format_value(n, fields.get(n))}" for n in names)])


def tier_of(policies: Policies, metadata: Any) -> str:
    """The tier a user's identity metadata places them in (tier:default when the
    metadata does not name an existing tier)."""
    value = metadata_value(metadata, policies.tier_key)
    if value is not None:
        scope = f"tier:{value}"
        if scope in policies.by_scope and scope != ANONYMOUS_TIER:
            return scope
    return DEFAULT_TIER


def metadata_value(metadata: Any, key: str) -> str | None:
    """``key`` in orq.ai-style metadata (a list of objects) or a plain object."""
    items = metadata if isinstance(metadata, list) else [metadata]
    for item in items:
        if isinstance(item, dict) and key in item:
            value = item[key]
            if isinstance(value, str | int) and not isinstance(value, bool):
                return str(value)
    return None


def applicable(
    policies: Policies,
    external_id: str | None,
    metadata: Any,
    key_id: int,
    key_name: str,
) -> Applicable:
    """The limits that apply to one request of ``external_id`` (None: anonymous)
    through the key ``key_name``."""
    key_scope = f"key:{key_name}"
    key_limits = policies.tier(key_scope) if key_scope in policies.by_scope else None
    if external_id is None:
        tier = ANONYMOUS_TIER if ANONYMOUS_TIER in policies.by_scope else DEFAULT_TIER
        return Applicable(f"anon:{key_id}", policies.tier(tier) or {}, tier, key_scope, key_limits)
    tier = tier_of(policies, metadata) if policies.has_named_tiers() else DEFAULT_TIER
    limits = policies.tier(tier) or dict(SHIPPED_DEFAULT)
    override = policies.by_scope.get(f"user:{external_id}")
    if override:
        limits.update({n: override[n] for n in FIELDS if n in override})
    return Applicable(f"user:{external_id}", limits, tier, key_scope, key_limits)
