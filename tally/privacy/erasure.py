"""Erasure: an end user's personal data removed everywhere, their cost figures kept
(``flask --app app users erase INTERNAL_ID`` and the identity page's "Erase this user").

The ``end_users`` row stays as an anonymous placeholder (``erased:<row id>:<keyed
hash>``, no profile), so the request rows and the daily and monthly totals that point to
it by id stay whole and still add up; a new request with the same internal id creates a
fresh user. Gone: the profile; the upstream identifiers (``trace`` no longer resolves
them); the request rows' identifier link, upstream generation id and error message; the
user's limit override, counter reset and live counters; the keys bound to the user are
revoked, unbound and renamed ``erased-key-<row id>`` (their ``key:NAME`` policy and the
audit entries about them follow the new name); their id, e-mail, name and identifiers
in earlier audit entries and config comments; the sinks' events naming them (delivered
or parked: deleted; still waiting: the id replaced by ``erased``, the figures kept for
the billing system, tally.sinks.outbox.forget_user). One audit entry records the erasure,
naming the user by :func:`erasure_ref` only. See docs/architecture.md ("Erasure").
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass, replace
from datetime import datetime

from limits.storage import Storage
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from tally.audit import add_audit
from tally.db import utcnow
from tally.errors import InvalidInput
from tally.limits.checks import SLACK, marker_of, subject_keys
from tally.limits.policy_store import read_policies
from tally.models import ApiKey, EndUser, LimitPolicy, LimitReset, RequestLog, UpstreamIdentifier
from tally.privacy.redaction import Needles, redact_audit, redact_comments, rename_key_in_audit
from tally.sinks.outbox import forget_user

log = logging.getLogger(__name__)

ERASED_PREFIX = "erased:"
ERASED_KEY_PREFIX = "erased-key-"
ACTION = "identity.erase"


class ErasureError(InvalidInput):
    """An erasure that cannot be done: no such user, or the confirmation is wrong."""


@dataclass(frozen=True)
class Erased:
    """What an erasure removed, for the CLI and the console to report."""

    ref: str  # the keyed hash the audit entry names the user by
    placeholder_id: int  # the end_users row left, without a profile
    identifiers: int
    requests: int
    audit_entries: int
    keys: int
    limits: int  # limit overrides and counter resets
    counters_cleared: bool
    renamed_keys: tuple[str, ...] = ()  # the new names of the keys bound to the user


def erasure_ref(hash_key: bytes, internal_id: str) -> str:
    """HMAC-SHA-256 of the internal id under the instance's TALLY_HASH_KEY, in a domain
    of its own (never equal to an upstream identifier's digest): whoever holds the key
    and is asked about ``internal_id`` can find its erasure; nobody else can."""
    message = b"tally-erasure\x00" + internal_id.encode("utf-8")
    return hmac.new(hash_key, message, hashlib.sha256).hexdigest()


def is_erased(external_id: str) -> bool:
    """True for the placeholder an erasure leaves."""
    return external_id.startswith(ERASED_PREFIX)


def erase_user(
    session: Session,
    internal_id: str,
    actor: str,
    hash_key: bytes,
    counters: Storage | None = None,
    now: datetime | None = None,
) -> Erased:
    """Erase the end user ``internal_id`` (see the module); one commit. ``counters``:
    the limit storage, whose counters of the user are cleared after the commit (best
    effort: they expire on their own within a month)."""
    if is_erased(internal_id):
        raise ErasureError(f"{internal_id!r} is an erased user already")
    # Locked (PostgreSQL) so a batch recording the user's calls right now either lands
    # before (and is erased with the rest) or waits and then makes a fresh user.
    user = session.scalar(
        select(EndUser).where(EndUser.external_id == internal_id).with_for_update()
    )
    if user is None:
        raise ErasureError(f"no end user with internal id {internal_id!r}")
    now = now or utcnow()
    identifiers = session.scalars(
        select(UpstreamIdentifier.identifier).where(UpstreamIdentifier.user_id == user.id)
    ).all()
    needles = Needles.of(internal_id, user.email, user.display_name, user.logo_url, identifiers)
    ref = erasure_ref(hash_key, internal_id)
    requests = _scrub_requests(session, user.id)
    forget_user(session.connection(), internal_id)  # the sinks' events naming them
    session.execute(delete(UpstreamIdentifier).where(UpstreamIdentifier.user_id == user.id))
    renamed = _retire_keys(session, user.id, now)
    limits = _drop_limits(session, internal_id)
    entries = sum(rename_key_in_audit(session, old, new) for old, new in renamed)
    entries += redact_audit(session, needles) + redact_comments(session, needles)
    _blank_profile(user, ref)
    new_names = tuple(new for _, new in renamed)
    erased = Erased(
        ref, user.id, len(identifiers), requests, entries, len(renamed), limits, False, new_names
    )
    add_audit(session, actor, ACTION, target=f"end user {ref}", after=_summary(erased))
    session.commit()
    subjects = [f"user:{internal_id}", *(f"key:{old}" for old, _ in renamed)]
    stamp = read_policies(session).stamp if counters is not None else 0
    return _with_counters(erased, counters, subjects, now, stamp)


def _scrub_requests(session: Session, user_id: int) -> int:
    """The user's request rows keep their figures (tokens, cost, model, day, key, status)
    and lose what leads back to the person: the identifier sent, the upstream's
    generation id (its logs hold the identifier and the prompt), the error message
    (an upstream may quote the request). Without its generation id an estimated cost can
    no longer be reconciled: the row stays estimated."""
    result = session.execute(
        update(RequestLog)
        .where(RequestLog.user_id == user_id)
        .values(identifier_id=None, generation_id=None, error_message=None, reconcile_after=None)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0


def _retire_keys(session: Session, user_id: int, now: datetime) -> list[tuple[str, str]]:
    """Keys bound to the user are revoked, unbound and renamed; returns their (old, new)
    names. A key that speaks for one person would otherwise keep sending as the
    placeholder, or bring the person back; and its name is theirs too, as often as not
    ("Ada's phone", their id): every call it made was theirs, so the neutral name
    ``erased-key-<row id>`` loses nothing but them. Its ``key:NAME`` policy follows."""
    keys = session.scalars(select(ApiKey).where(ApiKey.bound_user_id == user_id)).all()
    renamed = []
    for key in keys:
        key.bound_user_id = None
        key.revoked_at = key.revoked_at or now
        old, key.name = key.name, _neutral_key_name(session, key.id)
        renamed.append((old, key.name))
        for model, column in ((LimitPolicy, LimitPolicy.scope), (LimitReset, LimitReset.subject)):
            session.execute(
                update(model).where(column == f"key:{old}").values({column: f"key:{key.name}"})
            )
    return renamed


def _neutral_key_name(session: Session, key_id: int) -> str:
    """``erased-key-<row id>``, with a random tail should an operator have taken it."""
    name = f"{ERASED_KEY_PREFIX}{key_id}"
    if session.scalar(select(ApiKey.id).where(ApiKey.name == name, ApiKey.id != key_id)):
        name = f"{name}-{secrets.token_hex(4)}"
    return name


def _drop_limits(session: Session, internal_id: str) -> int:
    """The user's override (``user:ID``) and recorded counter reset."""
    scope = f"user:{internal_id}"
    dropped = session.execute(delete(LimitPolicy).where(LimitPolicy.scope == scope)).rowcount
    reset = session.execute(delete(LimitReset).where(LimitReset.subject == scope)).rowcount
    return (dropped or 0) + (reset or 0)


def _blank_profile(user: EndUser, ref: str) -> None:
    """The row stays, for the totals keyed by its id: no profile, a placeholder id no
    client can send by chance (the keyed hash), unique (the row id)."""
    user.external_id = f"{ERASED_PREFIX}{user.id}:{ref[:16]}"
    user.display_name = user.email = user.logo_url = None
    user.profile_metadata = user.tags = None
    user.verified = False


def _summary(erased: Erased) -> dict[str, int | str | list[str]]:
    return {
        "user_ref": erased.ref,
        "placeholder_id": erased.placeholder_id,
        "identifiers": erased.identifiers,
        "requests": erased.requests,
        "audit_entries": erased.audit_entries,
        "keys_revoked": erased.keys,
        "keys_renamed": list(erased.renamed_keys),
        "limits": erased.limits,
    }


def _with_counters(
    erased: Erased,
    counters: Storage | None,
    subjects: list[str],
    now: datetime,
    stamp: int = 0,
) -> Erased:
    """Clear the counters (and their markers, under the policies of ``stamp``) of
    ``subjects`` (the user, the old names of their keys) in the limit storage; a storage
    that cannot be reached is logged (without the id: logs carry no user ids)."""
    if counters is None:
        return erased
    epoch = calendar.timegm(now.timetuple())
    counted: set[str] = set()
    for subject in subjects:
        counted |= set(subject_keys(subject, epoch)) | set(subject_keys(subject, epoch - SLACK))
    markers = {marker_of(key, stamp) for key in counted}
    keys = counted | {f"tally/reset/{subject}" for subject in subjects}
    keys |= {f"{key}/seeded" for key in counted} | markers | {f"{m}/ready" for m in markers}
    try:
        for key in sorted(keys):
            counters.clear(key)
    except Exception as exc:  # any storage failure: the counters expire on their own
        log.warning("erasure %s: limit counters not cleared (%s)", erased.ref[:16], exc)
        return erased
    return replace(erased, counters_cleared=True)


def erase_user_by_id(
    session: Session,
    user_id: int,
    confirmation: str,
    actor: str,
    hash_key: bytes,
    counters: Storage | None = None,
) -> Erased | None:
    """The console's erasure: the end user of row ``user_id`` (None when there is no
    such row), once ``confirmation`` — the internal id, typed — matches."""
    external_id = session.scalar(select(EndUser.external_id).where(EndUser.id == user_id))
    if external_id is None:
        return None
    if external_id not in (confirmation, confirmation.strip()):
        raise ErasureError(
            "The confirmation does not match: type the internal id exactly to erase.",
            field="confirm",
        )
    return erase_user(session, external_id, actor, hash_key, counters)
