"""How an end user's internal id becomes the upstream identifier (PRODUCT.md's
derivation: prefix, then the id, its SHA-256 or its keyed HMAC), and how that identifier is
put on the upstream request in the upstream's own dialect. Pure functions over a frozen
:class:`~tally.tracking.config.TrackingConfig`."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from tally.end_users.claims import EndUserClaim
from tally.errors import InvalidInput
from tally.tracking.config import (
    CLIENT_USER_FIELDS,
    MAX_IDENTIFIER_LENGTH,
    PROFILE_FIELDS,
    TrackingConfig,
)


def derive_identifier(config: TrackingConfig, internal_id: str, hash_key: bytes) -> str:
    """The upstream identifier for ``internal_id`` under ``config`` (PRODUCT.md's rules)."""
    raw = internal_id.encode("utf-8")
    if config.hash_mode == "none":
        core = internal_id
    elif config.hash_mode == "sha256":
        core = hashlib.sha256(raw).hexdigest()[: config.hash_length]
    else:
        core = hmac.new(hash_key, raw, hashlib.sha256).hexdigest()[: config.hash_length]
    return f"{config.prefix}_{core}" if config.prefix else core


def check_identifier(identifier: str, param: str, limit: int = MAX_IDENTIFIER_LENGTH) -> None:
    """Refuse an identifier the upstream would not take (longer than ``limit``)."""
    if len(identifier) > limit:
        raise InvalidInput(
            f"The upstream identifier derived from {param} would be {len(identifier)} "
            f"characters; the limit is {limit}. Send a shorter {param}, "
            "or ask the operator for a hash mode or a shorter prefix.",
            field=param,
            code="identifier_too_long",
        )


def attach(
    body: dict[str, Any],
    config: TrackingConfig,
    identifier: str | None,
    profile: dict[str, Any] | None = None,
    *,
    embeddings: bool = False,
) -> dict[str, Any]:
    """Return ``body`` without what the client said about its end user, stamped for the
    upstream in ``config``'s dialect.

    ``profile`` holds the request's own identity fields; they are sent only when
    :attr:`TrackingConfig.sends_profile` allows. ``embeddings``: the request is an
    embeddings call, which has neither ``safety_identifier`` nor ``prompt_cache_key``
    (the ``openai`` dialect then sets ``user``).
    """
    out = {k: v for k, v in body.items() if k not in CLIENT_USER_FIELDS}
    if not config.enabled or identifier is None:
        return out
    if config.dialect == "orq":
        identity: dict[str, Any] = {"id": identifier}
        if config.sends_profile and profile:
            identity.update({k: profile[k] for k in PROFILE_FIELDS if k in profile})
        out["identity"] = identity
    elif config.dialect == "openai" and not embeddings:
        out["safety_identifier"] = identifier
    else:
        out["user"] = identifier
    if config.cache_key and not embeddings:
        out["prompt_cache_key"] = identifier
    return out


def stamp(config: TrackingConfig, claim: EndUserClaim | None, hash_key: bytes) -> str | None:
    """The upstream identifier for the request's end user (None when nothing identifying
    goes upstream); refuses a request without one when the config requires it, and an
    identifier the dialect cannot carry."""
    if claim is None:
        if config.require_identity:
            raise InvalidInput(
                "This gateway requires an end user: send identity.id, user, "
                "safety_identifier, or the X-Tally-User header.",
                field="user",
                code="identity_required",
            )
        return None
    if not config.enabled:
        return None
    identifier = derive_identifier(config, claim.external_id, hash_key)
    check_identifier(identifier, claim.param, config.max_identifier_length)
    return identifier
