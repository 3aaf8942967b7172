"""API keys as the console lists and mints them (on top of services.keys)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from tally.identity import MAX_ID_LENGTH
from tally.models import ApiKey
from tally.services.keys import ApiKeyError, create_api_key


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
    """create_api_key for a form: a blank user means an unbound key; a bound user's id is
    held to the API's limits; ``origins`` is typed text, one origin per line or comma."""
    bound = bound_external_id.strip() or None
    if bound is not None and len(bound) > MAX_ID_LENGTH:
        raise ApiKeyError(f"the end user id must be at most {MAX_ID_LENGTH} characters")
    return create_api_key(
        session,
        name,
        actor,
        bound_external_id=bound,
        user_token=user_token,
        origins=origins.replace(",", " ").split(),
    )
