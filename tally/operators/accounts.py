"""Console operators: admins change things, support staff look and trace."""

from __future__ import annotations

import hmac
import secrets
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tally.audit import add_audit
from tally.db import utcnow
from tally.end_users.claims import EMAIL_RE
from tally.errors import InvalidInput
from tally.models import Operator
from tally.operators.passwords import password_weakness

ROLES = ("admin", "support")
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
MAX_EMAIL_LENGTH = 320
# The one place the hash's cost is set, public so a caller can choose another: the tests
# swap in cheap parameters (these cost a quarter second a hash, by design).
hasher = PasswordHasher()


class OperatorError(InvalidInput):
    """An operator change that cannot be made."""


def create_operator(session: Session, email: str, role: str, password: str, actor: str) -> Operator:
    """Add an operator; the password is stored only as an argon2id hash."""
    email = email.strip().lower()
    if len(email) > MAX_EMAIL_LENGTH or not EMAIL_RE.fullmatch(email):
        raise OperatorError(f"{email!r} is not a valid e-mail address")
    if role not in ROLES:
        raise OperatorError(f"role must be one of {', '.join(ROLES)}")
    _check_new_password(password, email)
    if session.scalars(select(Operator.id).where(Operator.email == email)).first():
        raise OperatorError(f"an operator {email} already exists")
    operator = Operator(
        email=email, role=role, password_hash=hasher.hash(password), session_nonce=new_nonce()
    )
    session.add(operator)
    add_audit(session, actor, "operator.create", target=email, after={"role": role})
    session.commit()
    return operator


def _check_new_password(password: str, email: str) -> None:
    """Refuse a password that is too short, too long, or too easy to guess for the
    account ``email`` (tally.operators.passwords)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise OperatorError(
            f"the password must be at least {MIN_PASSWORD_LENGTH} characters", "password"
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise OperatorError(
            f"the password must be at most {MAX_PASSWORD_LENGTH} characters", "password"
        )
    weakness = password_weakness(password, email)
    if weakness:
        raise OperatorError(weakness, "password")


def new_nonce() -> str:
    """A fresh session nonce: every session cookie made before it stops working."""
    return secrets.token_hex(16)


def session_is_current(operator: Operator, nonce: str) -> bool:
    """True when a session cookie's ``nonce`` is the operator's current one (constant
    time: the nonce is what makes a copied cookie useless after logout)."""
    return hmac.compare_digest(operator.session_nonce.encode(), nonce.encode())


def end_sessions(session: Session, operator_id: int) -> None:
    """End every session of the operator, on every browser that holds a copy of its
    cookie (logout): the cookie names a nonce that is no longer the operator's."""
    operator = session.get(Operator, operator_id)
    if operator is not None:
        operator.session_nonce = new_nonce()
        session.commit()


def change_password(
    session: Session, operator_id: int, current: str, new: str, actor: str
) -> Operator:
    """Set a new password after checking the current one; every existing session of the
    operator ends (the caller logs the operator in again with the new nonce)."""
    operator = _existing(session, operator_id)
    if not check_password(operator, current):
        raise OperatorError("the current password is wrong", "current_password")
    _check_new_password(new, operator.email)
    operator.password_hash = hasher.hash(new)
    operator.session_nonce = new_nonce()
    add_audit(session, actor, "operator.password", target=operator.email)
    session.commit()
    return operator


def check_password(operator: Operator, password: str) -> bool:
    """True when ``password`` matches the operator's stored hash."""
    return check_password_hash(operator.password_hash, password)


@cache
def _dummy_hash() -> str:
    """A hash to verify against when the e-mail is unknown, so such a login takes as long
    as one for a known e-mail and does not reveal which accounts exist."""
    return hasher.hash("tally-no-such-operator")


def authenticate_operator(session: Session, email: str, password: str) -> Operator | None:
    """The active operator with this e-mail and password (and its login time recorded),
    or None. Unknown e-mail, wrong password and disabled account look the same."""
    email = email.strip().lower()
    if len(email) > MAX_EMAIL_LENGTH or len(password) > MAX_PASSWORD_LENGTH:
        return None
    operator = session.scalars(select(Operator).where(Operator.email == email)).first()
    if operator is None:
        check_password_hash(_dummy_hash(), password)
        return None
    if not check_password(operator, password) or not operator.is_active:
        return None
    operator.last_login_at = utcnow()
    if hasher.check_needs_rehash(operator.password_hash):
        operator.password_hash = hasher.hash(password)
    session.commit()
    return operator


def check_password_hash(password_hash: str, password: str) -> bool:
    """True when ``password`` matches ``password_hash``."""
    try:
        return hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def operator_id_of(session: Session, email: str) -> int | None:
    """The id of the operator with this e-mail (any case), if any."""
    email = email.strip().lower()
    if len(email) > MAX_EMAIL_LENGTH:
        return None
    return session.scalars(select(Operator.id).where(Operator.email == email)).first()


def get_operator(session: Session, operator_id: int) -> Operator | None:
    """The operator with this id, if any."""
    return session.get(Operator, operator_id)


def list_operators(session: Session) -> list[Operator]:
    """Every operator, admins first, then by e-mail."""
    return list(session.scalars(select(Operator).order_by(Operator.role, Operator.email)))


def change_role(session: Session, operator_id: int, role: str, actor: str) -> Operator:
    """Give an operator another role. The last active admin cannot be demoted."""
    if role not in ROLES:
        raise OperatorError(f"role must be one of {', '.join(ROLES)}")
    operator = _existing(session, operator_id)
    if operator.role == role:
        return operator
    if operator.role == "admin" and operator.is_active:
        _keep_an_admin(session, operator, "demote")
    before = operator.role
    operator.role = role
    add_audit(
        session,
        actor,
        "operator.role",
        target=operator.email,
        before={"role": before},
        after={"role": role},
    )
    session.commit()
    return operator


def set_operator_active(session: Session, operator_id: int, active: bool, actor: str) -> Operator:
    """Enable or disable an operator; a disabled one is logged out at its next request.
    Nobody disables themselves, and the last active admin stays."""
    operator = _existing(session, operator_id)
    if operator.is_active == active:
        return operator
    if not active and operator.email == actor:
        raise OperatorError("you cannot disable your own account")
    if not active and operator.role == "admin":
        _keep_an_admin(session, operator, "disable")
    operator.is_active = active
    operator.session_nonce = new_nonce()  # a re-enabled account starts with no sessions
    add_audit(
        session,
        actor,
        "operator.enable" if active else "operator.disable",
        target=operator.email,
        before={"active": not active},
        after={"active": active},
    )
    session.commit()
    return operator


def _existing(session: Session, operator_id: int) -> Operator:
    operator = session.get(Operator, operator_id)
    if operator is None:
        raise OperatorError(f"no operator with id {operator_id}")
    return operator


def _keep_an_admin(session: Session, operator: Operator, verb: str) -> None:
    others = session.scalar(
        select(func.count(Operator.id)).where(
            Operator.role == "admin", Operator.is_active.is_(True), Operator.id != operator.id
        )
    )
    if not others:
        raise OperatorError(f"cannot {verb} {operator.email}: it is the last active admin")
