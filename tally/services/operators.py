"""Console operators: admins change things, support staff look and trace."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from tally.identity import EMAIL_RE
from tally.models import Operator
from tally.services.audit import add_audit

ROLES = ("admin", "support")
MIN_PASSWORD_LENGTH = 8
_hasher = PasswordHasher()


class OperatorError(ValueError):
    """An operator change that cannot be made."""


def create_operator(session: Session, email: str, role: str, password: str, actor: str) -> Operator:
    """Add an operator; the password is stored only as an argon2id hash."""
    email = email.strip().lower()
    if not EMAIL_RE.fullmatch(email):
        raise OperatorError(f"{email!r} is not a valid e-mail address")
    if role not in ROLES:
        raise OperatorError(f"role must be one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise OperatorError(f"the password must be at least {MIN_PASSWORD_LENGTH} characters")
    if session.scalars(select(Operator.id).where(Operator.email == email)).first():
        raise OperatorError(f"an operator {email} already exists")
    operator = Operator(email=email, role=role, password_hash=_hasher.hash(password))
    session.add(operator)
    add_audit(session, actor, "operator.create", target=email, after={"role": role})
    session.commit()
    return operator


def check_password(operator: Operator, password: str) -> bool:
    """True when ``password`` matches the operator's stored hash."""
    try:
        return _hasher.verify(operator.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
