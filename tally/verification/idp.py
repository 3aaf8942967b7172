"""Verified end users: the identity provider config (stored, audited, cached like the
tracking config), the verification of a request's end-user token, and the origins that
browser frontends may call from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jwt
from sqlalchemy import select
from sqlalchemy.orm import Session

from tally.audit import add_audit
from tally.cache import Cache
from tally.db import utcnow
from tally.end_users.claims import EndUserClaim
from tally.keys.api_keys import AuthenticatedKey
from tally.models import ApiKey, IdentityProviderConfig
from tally.verification.idp_config import FIELDS, IdpConfig
from tally.verification.jwks import KeySets
from tally.verification.tokens import IdpUnavailable, TokenError, verify_token

ROW_ID = 1  # one identity provider per deployment


def active_idp(session: Session, cache: Cache | None = None) -> IdpConfig:
    """The identity provider (an unconfigured one before any is set).

    Served from ``cache`` (the gateway's, tally.cache) when given: a change bumps the
    cache version, so every worker and instance uses it from the next request.
    """
    if cache is None:
        return _load_idp(session)
    return cache.get("idp", lambda: _load_idp(session))


def _load_idp(session: Session) -> IdpConfig:
    row = session.get(IdentityProviderConfig, ROW_ID)
    if row is None:
        return IdpConfig()
    return IdpConfig(**{name: getattr(row, name) for name in FIELDS})


def save_idp(session: Session, fields: dict[str, str], actor: str) -> IdpConfig:
    """Apply ``fields`` (text, as typed) to the identity provider; audited before → after.
    Raises IdpFieldError (a InvalidInput) for a bad field or value."""
    before = _load_idp(session)
    config = before.with_fields(fields)
    if config == before:
        return config
    row = session.get(IdentityProviderConfig, ROW_ID)
    if row is None:
        row = IdentityProviderConfig(id=ROW_ID, updated_by=actor)
        session.add(row)
    for name, value in config.as_fields().items():
        setattr(row, name, value)
    row.updated_at, row.updated_by = utcnow(), actor
    add_audit(
        session,
        actor,
        "idp.update",
        target=config.issuer,
        before=before.as_fields() if before.configured else None,
        after=config.as_fields(),
    )
    session.commit()
    return config


def verify_end_user(
    session: Session,
    key_sets: KeySets,
    key: AuthenticatedKey,
    token: str | None,
    cache: Cache | None = None,
) -> EndUserClaim | None:
    """The verified end user of a request made with ``key`` and end-user ``token``
    (X-Tally-User-Token), or None when the key needs none and none was sent.

    Raises TokenError (401) for a missing or bad token, IdpUnavailable (503) when it
    cannot be verified now.
    """
    if not key.user_token and not (token and token.strip()):
        return None
    config = active_idp(session, cache)
    if not config.configured:
        raise IdpUnavailable(
            "End-user tokens cannot be verified: no identity provider is configured "
            "(flask --app app idp set issuer=… jwks_url=…).",
            code="idp_not_configured",
        )
    if not (token and token.strip()):
        raise TokenError(
            "token_missing",
            "This API key needs an end-user token in the X-Tally-User-Token header.",
        )
    return verify_token(token, config, key_sets.for_url(config.jwks_url), key.origins)


@dataclass(frozen=True)
class TokenVerdict:
    """What Tally would conclude from a token (the console's "test a token" box)."""

    accepted: bool
    code: str | None = None
    message: str | None = None
    claim: EndUserClaim | None = None
    facts: dict[str, Any] | None = None


def try_token(session: Session, key_sets: KeySets, token: str, origin: str = "") -> TokenVerdict:
    """Verify ``token`` as a call with a --user-token key of ``origin`` would (the token is
    neither stored nor logged); say what Tally concludes."""
    origins = (origin.strip().rstrip("/").lower(),) if origin.strip() else ()
    key = AuthenticatedKey(0, "test", None, user_token=True, origins=origins)
    try:
        claim = verify_end_user(session, key_sets, key, token)
    except (TokenError, IdpUnavailable) as exc:
        return TokenVerdict(False, exc.code, exc.message)
    claims = jwt.decode(token.strip(), options={"verify_signature": False})
    facts = {name: claims[name] for name in ("iss", "aud", "azp", "exp", "iat") if name in claims}
    return TokenVerdict(True, claim=claim, facts=facts)


def allows_origin(session: Session, origin: str, cache: Cache | None = None) -> bool:
    """True when some active key lists ``origin`` (for preflights, which carry no key)."""
    origins = (
        cache.get("origins", lambda: _all_origins(session))
        if cache is not None
        else _all_origins(session)
    )
    return origin in origins


def _all_origins(session: Session) -> frozenset[str]:
    rows = session.scalars(
        select(ApiKey.origins).where(ApiKey.revoked_at.is_(None), ApiKey.origins.is_not(None))
    )
    return frozenset(origin for origins in rows for origin in (origins or ()))
