"""What a request is held to: its end user's (or anonymous bucket's) and key's checks,
worked out once per policies and UTC day (a :class:`Gate`), and the admission plan the
storage runs for them (tally/limits/engine.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tally.end_users.claims import EndUserClaim
from tally.limits.checks import Check, build_checks, subject_keys
from tally.limits.policy import Policies, applicable, tier_of
from tally.limits.policy_store import user_metadata
from tally.limits.runtime import LimitsRuntime

# A reset older than this clears nothing that still exists (the longest counter is a
# month's); forgetting it keeps plans small. Shorter than the engine's MARKER_TTL.
RESET_HORIZON = 35 * 86400


@dataclass(frozen=True)
class Gate:
    """What every request of one end user (or anonymous bucket) through one key is held
    to on one UTC day: worked out once per policies (tally.limits.policy.Policies.memo)."""

    checks: list[Check]
    plan: list[dict[str, Any]]  # the checks as the storage's plan runner reads them
    markers: list[str]
    subjects: frozenset[str]
    counters: list[Check]  # the checks a call's tokens and cost go to
    quota: int | None  # the user's message quota, which the headers show when it applies


MEMO_MAX = 50_000  # gates kept per policies; all forgotten when full


def gate_for(
    limits: LimitsRuntime, policies: Policies, key, claim: EndUserClaim | None, now: float
) -> Gate:
    """The gate of this request's end user (or anonymous bucket) and key, kept on
    ``policies`` (a day's checks are the same all day)."""
    external_id = claim.external_id if claim is not None else None
    metadata = tier = None
    if external_id is not None and policies.has_named_tiers():
        metadata = user_metadata(limits.sessions, claim, limits.metadata_cache)
        tier = tier_of(policies, metadata)
    memo_key = (external_id, tier, key.id, key.name, int(now // 86400))
    gate = policies.memo.get(memo_key)
    if gate is None:
        if len(policies.memo) >= MEMO_MAX:
            policies.memo.clear()
        scope = applicable(policies, external_id, metadata, key.id, key.name)
        checks = build_checks(scope, key.id, now, policies.stamp)
        quota = next(
            (
                i
                for i, c in enumerate(checks)
                if c.field == "messages" and not c.subject.startswith("key:")
            ),
            None,
        )
        gate = policies.memo[memo_key] = Gate(
            checks,
            [c.as_plan() for c in checks],
            [c.marker for c in checks],
            frozenset(c.subject for c in checks),
            [c for c in checks if c.kind == "counter"],
            quota,
        )
    return gate


def admission_plan(policies: Policies, checks: list[Check], now: float) -> dict:
    """The plan of ``checks``, with the resets of their subjects still to apply."""
    return {
        "checks": [c.as_plan() for c in checks],
        "markers": [c.marker for c in checks],
        "resets": resets_of(policies, {c.subject for c in checks}, now),
        "now": now,
    }


def resets_of(policies: Policies, subjects, now: float) -> list[dict[str, Any]]:
    """The ``limits reset``s of ``subjects`` that may still have counters to clear."""
    resets = []
    for subject in subjects:
        at = policies.resets.get(subject)
        if at is not None and now - at < RESET_HORIZON:
            mark = f"tally/reset/{subject}"
            keys = subject_keys(subject, now)
            resets.append({"mark": mark, "at": int(at * 1000), "keys": keys})
    return resets
