"""Limit policies in the database: read (cached), changed (audited), and counters reset.

Every change commits through the gateway's sessions, so the cache version is bumped
(tally/cache.py watches the ``limit_*`` tables): every worker and instance uses the new
policy from its next request, within the cache's one-second bound at worst.
"""

from __future__ import annotations

import calendar
import time
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from tally.audit import add_audit
from tally.cache import Cache
from tally.db import utcnow
from tally.end_users.claims import EndUserClaim
from tally.end_users.directory import end_user_seen
from tally.limits.policy import (
    DEFAULT_TIER,
    DEFAULT_TIER_KEY,
    FIELDS,
    SHIPPED_DEFAULT,
    Policies,
    PolicyError,
    format_policy,
    parse_scope,
)
from tally.models import ApiKey, EndUser, LimitPolicy, LimitReset, LimitSetting

POLICIES_CACHE_KEY = "limits.policies"
CHANGED_AT = "changed_at"  # the LimitSetting that holds Policies.stamp


def read_policies(session: Session) -> Policies:
    """Every policy, the tier key and the resets, from the database."""
    by_scope = {p.scope: dict(p.fields) for p in session.scalars(select(LimitPolicy))}
    settings = {s.name: s.value for s in session.scalars(select(LimitSetting))}
    resets = {
        r.subject: calendar.timegm(r.reset_at.timetuple()) + r.reset_at.microsecond / 1e6
        for r in session.scalars(select(LimitReset))
    }
    tier_key = settings.get("tier_key", DEFAULT_TIER_KEY)
    return Policies(by_scope, tier_key, resets, int(settings.get(CHANGED_AT, 0)))


def _changed(session: Session) -> None:
    """Note that the policies changed now (Policies.stamp): every counter is rebuilt from
    the request log on its next use, so a limit set again counts its whole window."""
    row = session.scalar(select(LimitSetting).where(LimitSetting.name == CHANGED_AT))
    stamp = str(int(time.time() * 1000))
    if row is None:
        session.add(LimitSetting(name=CHANGED_AT, value=stamp))
    else:
        row.value = stamp


def load_policies(sessions: sessionmaker, cache: Cache | None = None) -> Policies:
    """The policies, from ``cache`` (the gateway's) while its version is current. A
    reload that finds them unchanged keeps the object held (and what its ``memo``
    holds: each request kind's checks)."""

    def load() -> Policies:
        with sessions() as session:
            fresh = read_policies(session)
        held = cache.last(POLICIES_CACHE_KEY) if cache is not None else None
        return held if held == fresh else fresh

    return cache.get(POLICIES_CACHE_KEY, load) if cache is not None else load()


def user_metadata(sessions: sessionmaker, claim: EndUserClaim, cache: Cache | None = None) -> Any:
    """The metadata that places a user in a tier: this request's ``identity.metadata``
    when it has one, else what was stored from an earlier request (cached ≤ 1 s in
    ``cache``, the limits' own: many users' entries must not push API keys out of the
    gateway's)."""
    if claim.source == "identity" and claim.profile.get("metadata") is not None:
        return claim.profile["metadata"]

    def load() -> tuple[Any]:
        with sessions() as session:
            stored = session.scalar(
                select(EndUser.profile_metadata).where(EndUser.external_id == claim.external_id)
            )
        return (stored,)  # a tuple: "no metadata" is cached too

    if cache is None:
        return load()[0]
    return cache.get(claim.external_id, load)[0]


def policy_lines(session: Session) -> list[str]:
    """``limits show``: every policy in field order, then ``tier_key=…``."""
    policies = read_policies(session)
    lines = []
    for scope in policies.all_scopes():
        fields = policies.by_scope.get(scope)
        if fields is None:
            fields = SHIPPED_DEFAULT
        lines.append(format_policy(scope, fields))
    lines.append(f"tier_key={policies.tier_key}")
    return lines


def set_policy(session: Session, scope: str, fields: dict[str, Any], actor: str) -> dict:
    """Create or change the policy of ``scope`` (only the fields given); audited."""
    scope = parse_scope(scope)
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise PolicyError(f"unknown field {sorted(unknown)[0]!r}; fields are {', '.join(FIELDS)}")
    if (
        scope.startswith("key:")
        and session.scalar(select(ApiKey.id).where(ApiKey.name == scope[4:])) is None
    ):
        raise PolicyError(f"no API key named {scope[4:]!r}")
    row = session.scalar(select(LimitPolicy).where(LimitPolicy.scope == scope))
    if row is None:
        base = {} if scope.startswith("user:") else {n: None for n in FIELDS}
        if scope == DEFAULT_TIER:
            base = dict(SHIPPED_DEFAULT)
        before = dict(SHIPPED_DEFAULT) if scope == DEFAULT_TIER else None
        row = LimitPolicy(scope=scope, fields=base, updated_by=actor)
        session.add(row)
    else:
        before = dict(row.fields)
    row.fields = {**(before or row.fields), **fields}
    row.updated_at, row.updated_by = utcnow(), actor
    _changed(session)
    add_audit(session, actor, "limits.set", scope, before, dict(row.fields))
    session.commit()
    return dict(row.fields)


def unseen_user_warning(session: Session, scope: str) -> str | None:
    """For a ``user:ID`` scope whose end user no request has named yet: a policy for them
    is kept all the same (it applies from their first request), but the operator may
    have mistyped the id, so say so. None for every other scope."""
    kind, _, internal_id = scope.partition(":")
    if kind != "user" or end_user_seen(session, internal_id):
        return None
    return (
        f"Note: no end user with internal id {internal_id} has been seen yet; "
        "the limit will apply when they are."
    )


def unset_policy(session: Session, scope: str, actor: str) -> None:
    """Drop the policy of ``scope`` (tier:default cannot go: set its fields instead)."""
    scope = parse_scope(scope)
    if scope == DEFAULT_TIER:
        raise PolicyError("tier:default applies to everyone and cannot be removed; set its fields")
    row = session.scalar(select(LimitPolicy).where(LimitPolicy.scope == scope))
    if row is None:
        raise PolicyError(f"no policy for {scope}")
    before = dict(row.fields)
    session.delete(row)
    _changed(session)
    add_audit(session, actor, "limits.unset", scope, before, None)
    session.commit()


def set_tier_key(session: Session, value: str, actor: str) -> None:
    """The identity metadata key whose value names a user's tier."""
    row = session.scalar(select(LimitSetting).where(LimitSetting.name == "tier_key"))
    before = row.value if row else DEFAULT_TIER_KEY
    if row is None:
        session.add(LimitSetting(name="tier_key", value=value))
    else:
        row.value = value
    _changed(session)
    add_audit(
        session, actor, "limits.tier_key", "tier_key", {"tier_key": before}, {"tier_key": value}
    )
    session.commit()


def reset_user(session: Session, scope: str, actor: str) -> None:
    """Clear ``user:ID``'s counters now: recorded here, applied by whichever process
    next checks that user (every storage), and honoured when counters are rebuilt."""
    scope = parse_scope(scope)
    if not scope.startswith("user:"):
        raise PolicyError("only user:INTERNAL_ID counters can be reset")
    row = session.scalar(select(LimitReset).where(LimitReset.subject == scope))
    if row is None:
        session.add(LimitReset(subject=scope, reset_at=utcnow()))
    else:
        row.reset_at = utcnow()
    add_audit(session, actor, "limits.reset", scope)
    session.commit()


def drop_resets(session: Session) -> None:
    """Forget every recorded reset (tests and maintenance)."""
    session.execute(delete(LimitReset))
    session.commit()
