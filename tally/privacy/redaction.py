"""Finding and removing what names one end user in free text and JSON: earlier audit
entries (targets, before/after values, the queries of identity searches), config
comments; and the audit entries of a key the erasure renamed. Used by the erasure
(tally.privacy.erasure).

What names a user (their *needles*): the internal id, the e-mail, the display name, the
logo URL and every upstream identifier sent for them. A needle is replaced wherever it
stands as a whole word (case ignored: ``user:ada`` loses ``ada``, ``adam`` keeps it);
one of fewer than :data:`MIN_SUBSTRING` characters only where it is the whole value or
the ``user:`` scope of one, so erasing user ``7`` does not rewrite ``revision 7``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Text, cast, select, update
from sqlalchemy.orm import Session

from tally.models import AuditEntry, ConfigRevision

REDACTED = "[erased]"
MIN_SUBSTRING = 3
BATCH = 1000  # audit entries read per statement
LOOKUP = "identity.lookup"
# JSON keys whose value is a person's profile: blanked whole in an entry about the user
PROFILE_KEYS = frozenset(
    {
        "bound_user",
        "display_name",
        "email",
        "external_id",
        "identifier",
        "identifiers",
        "internal_id",
        "logo_url",
        "metadata",
        "profile",
        "profile_metadata",
        "tags",
        "viewed",
    }
)


@dataclass(frozen=True)
class Needles:
    """What names one end user, and the matching that finds it. *Strong* needles (the
    internal id, e-mail, logo URL, identifiers) are the user's alone: one anywhere makes
    an entry about them. A display name ("Guest", "Admin") may be anyone's, so it is
    scrubbed only from entries that are about the user already."""

    internal_id: str
    strong: tuple[str, ...]
    weak: tuple[str, ...]
    identifiers: tuple[str, ...]
    email: str | None
    display_name: str | None

    @classmethod
    def of(
        cls,
        internal_id: str,
        email: str | None,
        display_name: str | None,
        logo_url: str | None,
        identifiers: Iterable[str],
    ) -> Needles:
        """The needles of one user (empty values left out)."""
        identifiers = tuple(i for i in identifiers if i)
        strong = _unique([internal_id, email, logo_url, *identifiers])
        weak = tuple(w for w in _unique([display_name]) if w.casefold() not in _folded(strong))
        return cls(internal_id, strong, weak, identifiers, email, display_name)

    @functools.cached_property
    def _escaped(self) -> tuple[str, ...]:
        return tuple(json.dumps(w, ensure_ascii=False)[1:-1].casefold() for w in self.strong)

    def may_name(self, *values: Any) -> bool:
        """A quick look (one serialisation, a few substring tests): False when no strong
        needle appears in ``values`` at all, so the entry cannot be about the user."""
        blob = json.dumps(values, ensure_ascii=False, default=str).casefold()
        return any(word in blob for word in self._escaped)

    def may_name_stored(self, action: str, target: str | None, *texts: str | None) -> bool:
        """:meth:`may_name` for an entry as stored (its JSON as text): a search that
        found the user, a needle in the target or the text, or text whose escapes
        (``\\u00e9``) only decoding can compare."""
        if target is not None:
            if action == LOOKUP and self.found_by(target):
                return True
            if self.may_name(target):
                return True
        for text in texts:
            if text is None:
                continue
            folded = text.casefold()
            if "\\u" in folded or any(word in folded for word in self._escaped):
                return True
        return False

    @functools.cached_property
    def _strong(self) -> re.Pattern[str] | None:
        return _pattern(self.strong)

    @functools.cached_property
    def _all(self) -> re.Pattern[str] | None:
        return _pattern(self.strong + self.weak)

    def scrub(self, text: str, about: bool = True) -> str:
        """``text`` with every needle in it replaced by ``[erased]`` (the display name
        only when ``about``)."""
        needles = self.strong + self.weak if about else self.strong
        folded = text.casefold()
        for word in needles:
            if folded == word.casefold():
                return REDACTED
            if folded == f"user:{word}".casefold():
                return "user:" + REDACTED
        pattern = self._all if about else self._strong
        return pattern.sub(REDACTED, text) if pattern is not None else text

    def found_by(self, query: str) -> bool:
        """True when an identity search for ``query`` would have listed the user
        (tally.end_users.directory: a prefix of the id or of an identifier, a part of
        the e-mail or name): such a search named them. A query shorter than
        :data:`MIN_SUBSTRING` names no one unless it is one of the needles whole."""
        q = query.strip().casefold()
        if len(q) < MIN_SUBSTRING:
            return bool(q) and q in _folded(self.strong + self.weak)
        prefixes = (self.internal_id, *self.identifiers)
        if any(p.casefold().startswith(q) for p in prefixes):
            return True
        return any(q in (v or "").casefold() for v in (self.email, self.display_name))


def _unique(words: Iterable[str | None]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(w for w in words if w and w.strip()))


def _folded(words: Iterable[str]) -> set[str]:
    return {w.casefold() for w in words}


def _pattern(words: tuple[str, ...]) -> re.Pattern[str] | None:
    """Any of ``words`` (those long enough) standing as a whole word, any case."""
    long = sorted((w for w in words if len(w) >= MIN_SUBSTRING), key=len, reverse=True)
    if not long:
        return None
    alternatives = "|".join(re.escape(w) for w in long)
    return re.compile(rf"(?<![^\W_])(?:{alternatives})(?![^\W_])", re.IGNORECASE)


def scrub_json(value: Any, needles: Needles, about: bool) -> Any:
    """``value`` (decoded JSON) with the needles scrubbed from every string, keys
    included; ``about``: the entry concerns the user, so the display name goes too, and
    profile fields go whole."""
    if isinstance(value, str):
        return needles.scrub(value, about)
    if isinstance(value, list):
        return [scrub_json(item, needles, about) for item in value]
    if isinstance(value, dict):
        scrubbed = {}
        for key, item in value.items():
            whole = about and key in PROFILE_KEYS and item is not None
            scrubbed[needles.scrub(key, about)] = (
                REDACTED if whole else scrub_json(item, needles, about)
            )
        return scrubbed
    return value


def redact_entry(
    action: str, target: str | None, before: Any, after: Any, needles: Needles
) -> dict[str, Any] | None:
    """The changed column values of one audit entry, or None when it does not name the
    user. A search whose query would have found the user loses the query whole."""
    old = {"target": target, "before": before, "after": after}
    searched = action == LOOKUP and target is not None and needles.found_by(target)
    if not searched and not needles.may_name(target, before, after):
        return None
    if searched and isinstance(after, dict) and "query" in after:
        after = {**after, "query": REDACTED}
    about = (
        searched
        or (target is not None and needles.scrub(target, False) != target)
        or scrub_json(before, needles, False) != before
        or scrub_json(after, needles, False) != after
    )
    if not about:
        return None
    new = {
        "target": REDACTED if searched else (target and needles.scrub(target)),
        "before": scrub_json(before, needles, True),
        "after": scrub_json(after, needles, True),
    }
    return {name: value for name, value in new.items() if value != old[name]} or None


def redact_audit(session: Session, needles: Needles) -> int:
    """Scrub the user from every audit entry (read a batch at a time, oldest first);
    returns how many entries changed. The caller commits.

    The JSON columns are read as their stored text: an entry none of whose text can
    name the user (most of them) is passed over without being decoded."""
    changed = 0
    last = 0
    columns = (AuditEntry.id, AuditEntry.action, AuditEntry.target)
    columns += (cast(AuditEntry.before, Text), cast(AuditEntry.after, Text))
    while True:
        rows = session.execute(
            select(*columns).where(AuditEntry.id > last).order_by(AuditEntry.id).limit(BATCH)
        ).all()
        if not rows:
            return changed
        for entry_id, action, target, before, after in rows:
            if not needles.may_name_stored(action, target, before, after):
                continue
            changes = redact_entry(action, target, _loads(before), _loads(after), needles)
            if changes:
                session.execute(
                    update(AuditEntry).where(AuditEntry.id == entry_id).values(**changes)
                )
                changed += 1
        last = rows[-1][0]


def rename_key_in_audit(session: Session, old: str, new: str) -> int:
    """Earlier audit entries about the API key named ``old`` — its creation and
    revocation (target the name), its ``key:NAME`` policy (target the scope) — name it
    ``new`` instead, so the trail still follows a key an erasure renamed; returns how
    many changed. The caller commits."""
    scope = f"key:{old}"
    rows = session.execute(
        select(AuditEntry.id, AuditEntry.action, AuditEntry.target, AuditEntry.after).where(
            AuditEntry.target.in_([old, scope])
        )
    ).all()
    changed = 0
    for entry_id, action, target, after in rows:
        if action.startswith("key.") and target == old:
            renamed = new
        elif action.startswith("limits.") and target == scope:
            renamed = f"key:{new}"
        else:  # a search for the name, say: not about the key
            continue
        values: dict[str, Any] = {"target": renamed}
        if isinstance(after, dict) and after.get("name") == old:
            values["after"] = {**after, "name": new}
        session.execute(update(AuditEntry).where(AuditEntry.id == entry_id).values(**values))
        changed += 1
    return changed


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def redact_comments(session: Session, needles: Needles) -> int:
    """Scrub the user from the tracking config revisions' comments (free text)."""
    changed = 0
    rows = session.execute(
        select(ConfigRevision.id, ConfigRevision.comment).where(ConfigRevision.comment.is_not(None))
    )
    for revision_id, comment in rows.all():
        scrubbed = needles.scrub(comment)
        if scrubbed != comment:
            session.execute(
                update(ConfigRevision)
                .where(ConfigRevision.id == revision_id)
                .values(comment=scrubbed)
            )
            changed += 1
    return changed
