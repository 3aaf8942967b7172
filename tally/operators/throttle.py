"""Failed console sign-ins, throttled so that nobody can guess a password and nobody can
lock an operator out from outside: OWASP's "device cookies" pattern
(owasp.org/www-community/Slow_Down_Online_Guessing_Attacks_with_Device_Cookies).

An attempt comes either from a browser the operator has signed in on before (it shows a
valid device cookie for the account it tries: :attr:`Attempt.device` is that cookie's
nonce) or from an untrusted client. A trusted browser is judged only by its own failures
(``device:<nonce>``). Any other attempt is judged by the account's failures from untrusted
clients (``account:<e-mail>``, known or not, so a lockout tells nothing of which accounts
exist) and by its address's (``address:<ip>``). So failures from elsewhere lock out
strangers, never the operator's own browser.

A lockout is a limit used up (flask-limiter's ``limits`` strategy on the deployment's limit
storage, as every other limit): it ends by itself when its window does. The failure that
locks a scope out writes an audit entry (``operator.lockout``). An attempt refused because
its account is locked still counts against its address: a client that keeps guessing at a
locked account is still guessing.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from limits import RateLimitItem, parse_many
from limits.strategies import RateLimiter
from sqlalchemy.orm import Session

from tally.audit import add_audit

LOCKOUT_ACTOR = "login throttle"  # who the audit log says locked a scope out
NAMESPACE = "tally/login"  # the storage keys' first part (tests clear "*tally/*")


@dataclass(frozen=True)
class Attempt:
    """One sign-in attempt: the e-mail typed (as typed; compared lower-cased), the
    client's address, and the nonce of its valid device cookie for that account, if any."""

    email: str
    address: str
    device: str | None = None

    @property
    def account(self) -> str:
        """The e-mail as accounts are keyed: trimmed, lower-cased, bounded."""
        return self.email.strip().lower()[:320]


@dataclass(frozen=True)
class Scope:
    """What failures are counted against: ``kind`` (``device``, ``account``, ``address``)
    and its key; ``account`` names the operator account concerned (for the audit)."""

    kind: str
    key: str
    account: str


class LoginThrottle:
    """The lockouts of console sign-in over a ``limits`` strategy (its storage shared by
    every worker and instance), each kind of scope with its limits (e.g. ``5 per minute;
    20 per hour``)."""

    def __init__(self, strategy: RateLimiter, per_account: str, per_address: str, per_device: str):
        self.strategy = strategy
        self.limits: dict[str, Sequence[RateLimitItem]] = {
            "account": parse_many(per_account),
            "address": parse_many(per_address),
            "device": parse_many(per_device),
        }

    def scopes(self, attempt: Attempt) -> list[Scope]:
        """What ``attempt`` is judged by: its device alone, or its account and address."""
        if attempt.device:
            return [Scope("device", attempt.device, attempt.account)]
        return [
            Scope("account", attempt.account, attempt.account),
            Scope("address", attempt.address, attempt.account),
        ]

    def locked_for(self, attempt: Attempt) -> int | None:
        """Seconds until ``attempt`` may be tried (the longest lockout of its scopes), or
        None when none of its scopes is locked out."""
        waits = [self._locked(scope) for scope in self.scopes(attempt)]
        waits = [wait for wait in waits if wait is not None]
        return max(waits) if waits else None

    def refused(self, session: Session, attempt: Attempt) -> None:
        """Count an attempt refused by a lockout against its address (an untrusted client
        guessing on); a trusted browser's refusal counts no further."""
        if not attempt.device:
            self._count(session, [s for s in self.scopes(attempt) if s.kind == "address"])

    def failed(self, session: Session, attempt: Attempt) -> None:
        """Count a failed sign-in against every scope of ``attempt``; each scope it locks
        out gets an audit entry (committed here)."""
        self._count(session, self.scopes(attempt))

    def _count(self, session: Session, scopes: list[Scope]) -> None:
        locked = []
        for scope in scopes:
            was_open = self._locked(scope) is None
            for item in self.limits[scope.kind]:
                self.strategy.hit(item, *self._ids(scope))
            wait = self._locked(scope)
            if was_open and wait is not None:
                locked.append((scope, wait))
        for scope, wait in locked:
            _audit_lockout(session, scope, wait)
        if locked:
            session.commit()

    def _locked(self, scope: Scope) -> int | None:
        now = time.time()
        waits = [
            max(1, int(self.strategy.get_window_stats(item, *self._ids(scope)).reset_time - now))
            for item in self.limits[scope.kind]
            if not self.strategy.test(item, *self._ids(scope))
        ]
        return max(waits) if waits else None

    @staticmethod
    def _ids(scope: Scope) -> tuple[str, ...]:
        # hashed: a key of bounded length whatever was typed (LMDB's keys are at most 511
        # bytes), and no e-mail or address in the limit storage
        digest = hashlib.sha256(scope.key.encode("utf-8", "replace")).hexdigest()
        return (NAMESPACE, scope.kind, digest)


def _audit_lockout(session: Session, scope: Scope, wait: int) -> None:
    """The audit entry of ``scope`` locked out for ``wait`` seconds: its target is the
    account (``account``, ``device``) or the address, ``after`` says which and until when
    (a device's nonce stays out of it: it is the key to that browser's budget)."""
    until = datetime.fromtimestamp(time.time() + wait, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    after = {"scope": scope.kind, "until": until}
    target = scope.account
    if scope.kind == "address":
        target, after["account"] = scope.key, scope.account
    add_audit(session, LOCKOUT_ACTOR, "operator.lockout", target=target, after=after)
