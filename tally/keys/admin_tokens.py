"""Admin API tokens: bearer secrets for ``/admin/api/…`` (reading usage for BI tools),
made and revoked by admins on the console, shown once, stored as SHA-256 (as API keys
are, tally.keys.minting), every change audited. Their prefix ``tadm_`` tells them apart
from the gateway's API keys (``tly_``), which the admin API refuses."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tally.audit import add_audit
from tally.db import utcnow
from tally.errors import InvalidInput
from tally.keys.minting import hash_secret, mint_secret
from tally.models import AdminToken

TOKEN_PREFIX = "tadm_"
MAX_NAME_LENGTH = 100
# last_used_at is written at most this often per token: a BI tool paging through an
# export makes many calls a minute, and none of them needs a write of its own.
TOUCH_EVERY = timedelta(minutes=1)


class AdminTokenError(InvalidInput):
    """A token operation that cannot be done (bad or duplicate name)."""


@dataclass(frozen=True)
class AuthenticatedToken:
    """The admin token a request presented."""

    id: int
    name: str


def create_admin_token(session: Session, name: str, actor: str) -> tuple[AdminToken, str]:
    """Mint an admin token named ``name``; return the row and the secret (shown once,
    never stored)."""
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise AdminTokenError(
            f"a token name must be 1 to {MAX_NAME_LENGTH} characters", field="name"
        )
    duplicate = AdminTokenError(f"a token named {name!r} already exists", field="name")
    if session.scalars(select(AdminToken.id).where(AdminToken.name == name)).first():
        raise duplicate
    minted = mint_secret(TOKEN_PREFIX)
    token = AdminToken(
        name=name, token_hash=minted.digest, display_prefix=minted.display, created_by=actor
    )
    session.add(token)
    try:
        session.flush()
    except IntegrityError:  # made at the same moment by someone else
        session.rollback()
        raise duplicate from None
    after = {"name": name, "prefix": token.display_prefix}
    add_audit(session, actor, "admin_token.create", target=name, after=after)
    session.commit()
    return token, minted.raw


def revoke_admin_token(session: Session, token: AdminToken, actor: str) -> AdminToken:
    """Revoke ``token``: the admin API refuses it from the next request on."""
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        add_audit(
            session,
            actor,
            "admin_token.revoke",
            target=token.name,
            before={"revoked": False},
            after={"revoked": True},
        )
        session.commit()
    return token


def list_admin_tokens(session: Session) -> list[AdminToken]:
    """Every admin token: active ones first, newest first."""
    return list(
        session.scalars(
            select(AdminToken).order_by(
                AdminToken.revoked_at.is_not(None),
                AdminToken.created_at.desc(),
                AdminToken.id.desc(),
            )
        )
    )


def get_admin_token(session: Session, token_id: int) -> AdminToken | None:
    """The admin token with this id, if any."""
    return session.get(AdminToken, token_id)


def authenticate_admin_token(
    session: Session, raw: str, now: datetime
) -> AuthenticatedToken | None:
    """The active admin token whose secret is ``raw``, or None; its ``last_used_at``
    becomes ``now`` if it is a minute old or more (one write a minute at the most)."""
    digest = hash_secret(raw)
    row = session.execute(
        select(AdminToken).where(AdminToken.token_hash == digest)
    ).scalar_one_or_none()
    if row is None or not hmac.compare_digest(row.token_hash, digest) or row.revoked_at:
        return None
    if row.last_used_at is None or row.last_used_at <= now - TOUCH_EVERY:
        # conditional, so that concurrent calls write once between them
        session.execute(
            update(AdminToken)
            .where(
                AdminToken.id == row.id,
                or_(
                    AdminToken.last_used_at.is_(None),
                    AdminToken.last_used_at <= now - TOUCH_EVERY,
                ),
            )
            .values(last_used_at=now)
            .execution_options(synchronize_session=False)
        )
        session.commit()
    return AuthenticatedToken(row.id, row.name)
