"""Tally API keys: minted once, stored as SHA-256, revocable at once; checked on every
API call, listed and minted by the console."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from tally.audit import add_audit
from tally.cache import Cache
from tally.db import session_from, utcnow
from tally.end_users.claims import MAX_ID_LENGTH
from tally.end_users.directory import upsert_end_user
from tally.errors import InvalidInput
from tally.keys.cors import normalize_origins
from tally.keys.minting import hash_secret, mint_secret
from tally.models import ApiKey, EndUser

KEY_PREFIX = "tly_"
MAX_NAME_LENGTH = 100


class ApiKeyError(InvalidInput):
    """A key operation that cannot be done (duplicate name, unknown key, bad name)."""


@dataclass(frozen=True)
class AuthenticatedKey:
    """What a request needs to know about the key it presented."""

    id: int
    name: str
    bound_external_id: str | None
    user_token: bool = False  # calls need a verified X-Tally-User-Token
    origins: tuple[str, ...] = ()  # browser origins that get CORS answers


def create_api_key(
    session: Session,
    name: str,
    actor: str,
    bound_external_id: str | None = None,
    user_token: bool = False,
    origins: Sequence[str] = (),
) -> tuple[ApiKey, str]:
    """Mint a key named ``name``; return the row and the secret (shown once, never stored).
    ``bound_external_id``: the end user every call is made for, held to the API's limits
    on an end user's id; ``user_token``: calls need a verified end-user token;
    ``origins`` get CORS."""
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise ApiKeyError(f"a key name must be 1 to {MAX_NAME_LENGTH} characters")
    if bound_external_id is not None and not 1 <= len(bound_external_id) <= MAX_ID_LENGTH:
        raise ApiKeyError(f"an end user id must be 1 to {MAX_ID_LENGTH} characters", "user")
    if user_token and bound_external_id:
        raise ApiKeyError("a key is bound to one end user or needs user tokens, not both")
    origins = normalize_origins(origins)
    if session.scalars(select(ApiKey.id).where(ApiKey.name == name)).first():
        raise ApiKeyError(f"a key named {name!r} already exists")
    minted = mint_secret(KEY_PREFIX)
    bound_user_id = upsert_end_user(session, bound_external_id) if bound_external_id else None
    key = ApiKey(
        name=name,
        key_hash=minted.digest,
        display_prefix=minted.display,
        created_by=actor,
        bound_user_id=bound_user_id,
        user_token=user_token,
        origins=list(origins) or None,
    )
    session.add(key)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise ApiKeyError(f"a key named {name!r} already exists") from None
    add_audit(
        session,
        actor,
        "key.create",
        target=name,
        after={
            "name": name,
            "prefix": key.display_prefix,
            "bound_user": bound_external_id,
            "user_token": user_token,
            "origins": list(origins),
        },
    )
    session.commit()
    return key, minted.raw


def revoke_api_key(session: Session, name: str, actor: str) -> ApiKey:
    """Revoke the key named ``name``; it is refused from the next request on."""
    key = session.scalars(select(ApiKey).where(ApiKey.name == name)).first()
    if key is None:
        raise ApiKeyError(f"no key named {name!r}")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        add_audit(
            session,
            actor,
            "key.revoke",
            target=name,
            before={"revoked": False},
            after={"revoked": True},
        )
        session.commit()
    return key


def authenticate(
    session: Session | sessionmaker, raw: str, cache: Cache | None = None
) -> AuthenticatedKey | None:
    """The active key whose secret is ``raw``, or None; read in ``session`` (or, given a
    factory, in a session of its own, opened only when the cache cannot answer).

    Served from ``cache`` (the gateway's, tally.cache) when given: a revocation bumps
    the cache version, so a revoked key is refused by the next request anywhere.
    """
    digest = hash_secret(raw)
    if cache is None:
        return _load_key(session, digest)
    return cache.get(("key", digest), lambda: _load_key(session, digest))


def _load_key(source: Session | sessionmaker, digest: str) -> AuthenticatedKey | None:
    with session_from(source) as session:
        row = session.execute(
            select(
                ApiKey.id,
                ApiKey.name,
                ApiKey.key_hash,
                ApiKey.revoked_at,
                EndUser.external_id,
                ApiKey.user_token,
                ApiKey.origins,
            )
            .outerjoin(EndUser, EndUser.id == ApiKey.bound_user_id)
            .where(ApiKey.key_hash == digest)
        ).first()
        # The lookup is by an index on the digest; compare_digest keeps the final check
        # constant-time whatever the database does.
        if row is None or not hmac.compare_digest(row.key_hash, digest) or row.revoked_at:
            return None
        return AuthenticatedKey(
            row.id, row.name, row.external_id, bool(row.user_token), tuple(row.origins or ())
        )


def list_api_keys(session: Session) -> list[ApiKey]:
    """Every key with its bound user: active ones first, newest first."""
    return list(
        session.scalars(
            select(ApiKey)
            .options(selectinload(ApiKey.bound_user))
            .order_by(ApiKey.revoked_at.is_not(None), ApiKey.created_at.desc(), ApiKey.id.desc())
        )
    )


def get_api_key(session: Session, key_id: int) -> ApiKey | None:
    """The key with this id, if any."""
    return session.get(ApiKey, key_id)


def mint_api_key(
    session: Session,
    name: str,
    bound_external_id: str,
    actor: str,
    user_token: bool = False,
    origins: str = "",
) -> tuple[ApiKey, str]:
    """create_api_key for a form: a blank user means an unbound key; ``origins`` is typed
    text, one origin per line or comma."""
    return create_api_key(
        session,
        name,
        actor,
        bound_external_id=bound_external_id.strip() or None,
        user_token=user_token,
        origins=origins.replace(",", " ").split(),
    )
