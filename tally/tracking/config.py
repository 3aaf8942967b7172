"""Tracking: the operator's config (every change a new revision, the newest active),
and the engine that turns an internal user id into the upstream identifier and puts it
on the upstream request body in the upstream's own dialect.

The engine (:class:`TrackingConfig`, :func:`derive_identifier`, :func:`attach`) is pure
functions over a frozen config; the store (:func:`active_config`, :func:`save_config`)
reads and writes revisions.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import asdict, dataclass, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tally.audit import add_audit
from tally.cache import Cache
from tally.errors import DomainError, InvalidRequest
from tally.models import ConfigRevision

HASH_MODES = ("hmac-sha256", "sha256", "none")
DIALECTS = ("openrouter", "openai", "orq", "compatible")
SWITCHES = ("enabled", "cache_key", "forward_profile", "require_identity")
FIELDS = (
    "enabled",
    "prefix",
    "hash_mode",
    "hash_length",
    "dialect",
    "cache_key",
    "forward_profile",
    "require_identity",
)
PREFIX_RE = re.compile(r"[A-Za-z0-9._-]{0,64}")
MAX_IDENTIFIER_LENGTH = 255
# OpenAI's safety_identifier (and the ``openai`` dialect's identifiers) hold at most 64.
OPENAI_IDENTIFIER_LENGTH = 64
PROFILE_FIELDS = ("display_name", "email", "metadata", "tags")
# What a client may say about its end user: none of it reaches the upstream as sent.
CLIENT_USER_FIELDS = frozenset({"user", "identity", "safety_identifier", "prompt_cache_key"})


class ConfigFieldError(DomainError):
    """A tracking-config field or value that is not allowed. ``field`` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(message, field)


@dataclass(frozen=True)
class TrackingConfig:
    """The operator's tracking config. Defaults are PRODUCT.md's first values."""

    enabled: bool = True
    prefix: str = "tally"
    hash_mode: str = "hmac-sha256"
    hash_length: int = 16
    dialect: str = "openrouter"
    cache_key: bool = False
    forward_profile: bool = False
    require_identity: bool = False
    revision_id: int | None = None

    def as_fields(self) -> dict[str, str]:
        """The config as PRODUCT.md spells it: ``on``/``off`` for switches, all strings."""
        values = asdict(self)
        return {
            name: (("on" if values[name] else "off") if name in SWITCHES else str(values[name]))
            for name in FIELDS
        }

    def with_fields(self, fields: dict[str, str]) -> TrackingConfig:
        """A copy with ``fields`` (strings, as typed by a person) applied and validated."""
        changes = {name: parse_field(name, value) for name, value in fields.items()}
        config = replace(self, revision_id=None, **changes)
        config.check()
        return config

    @property
    def max_identifier_length(self) -> int:
        """The longest identifier the dialect's upstream field takes."""
        return OPENAI_IDENTIFIER_LENGTH if self.dialect == "openai" else MAX_IDENTIFIER_LENGTH

    @property
    def hashed_identifier_length(self) -> int | None:
        """How long every identifier is in a hash mode; None in ``none`` mode (it is the
        prefix plus however long the internal id is)."""
        if self.hash_mode == "none":
            return None
        return len(self.prefix) + 1 + self.hash_length if self.prefix else self.hash_length

    def check(self) -> None:
        """Refuse a config whose identifiers would all be too long for its dialect."""
        length = self.hashed_identifier_length
        if length is not None and length > self.max_identifier_length:
            raise ConfigFieldError(
                "hash_length",
                f"the {self.dialect} dialect takes identifiers of at most "
                f"{self.max_identifier_length} characters; this prefix and hash_length give "
                f"{length}: shorten the prefix or the hash_length",
            )

    def length_warning(self) -> str | None:
        """What an operator should know before saving: in ``none`` mode, how long an
        internal id may be before its requests are refused."""
        if not self.enabled or self.hash_mode != "none":
            return None
        room = self.max_identifier_length - (len(self.prefix) + 1 if self.prefix else 0)
        return (
            f"The {self.dialect} dialect takes identifiers of at most "
            f"{self.max_identifier_length} characters: requests whose end-user id is longer "
            f"than {room} characters will be refused with 400. A hash mode avoids this."
        )

    @property
    def sends_profile(self) -> bool:
        """Profile fields go upstream only for orq, when asked, and never in a hash mode."""
        return (
            self.enabled
            and self.dialect == "orq"
            and self.forward_profile
            and (self.hash_mode == "none")
        )


def parse_field(name: str, raw: str) -> Any:
    """Validate one field typed as text; return its typed value or raise ConfigFieldError."""
    value = raw.strip() if isinstance(raw, str) else raw
    if name in SWITCHES:
        if value not in ("on", "off"):
            raise ConfigFieldError(name, f"{name} must be on or off, got {raw!r}")
        return value == "on"
    if name == "prefix":
        if not isinstance(value, str) or not PREFIX_RE.fullmatch(value):
            raise ConfigFieldError(
                name, "prefix must be at most 64 characters of A-Z, a-z, 0-9, '.', '_' or '-'"
            )
        return value
    if name == "hash_mode":
        if value not in HASH_MODES:
            raise ConfigFieldError(name, f"hash_mode must be one of {', '.join(HASH_MODES)}")
        return value
    if name == "hash_length":
        try:
            length = int(value)
        except (TypeError, ValueError):
            raise ConfigFieldError(
                name, "hash_length must be a whole number from 8 to 64"
            ) from None
        if not 8 <= length <= 64:
            raise ConfigFieldError(name, "hash_length must be a whole number from 8 to 64")
        return length
    if name == "dialect":
        if value not in DIALECTS:
            raise ConfigFieldError(name, f"dialect must be one of {', '.join(DIALECTS)}")
        return value
    raise ConfigFieldError(name, f"unknown field {name!r}; fields are {', '.join(FIELDS)}")


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
        raise InvalidRequest(
            f"The upstream identifier derived from {param} would be {len(identifier)} "
            f"characters; the limit is {limit}. Send a shorter {param}, "
            "or ask the operator for a hash mode or a shorter prefix.",
            param=param,
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


# --- the config store ----------------------------------------------------------------


def active_config(session: Session, cache: Cache | None = None) -> TrackingConfig:
    """The active tracking config (PRODUCT.md's defaults before any revision exists).

    Served from ``cache`` (the gateway's, tally.cache) when given: a new revision bumps
    the cache version, so every instance uses it from the next request. Without it, read
    from the session (as a transaction that is about to change the config must).
    """
    if cache is None:
        return _load_active_config(session)
    return cache.get("config", lambda: _load_active_config(session))


def _load_active_config(session: Session) -> TrackingConfig:
    revision = session.scalars(
        select(ConfigRevision).order_by(ConfigRevision.id.desc()).limit(1)
    ).first()
    return config_of(revision) if revision else TrackingConfig()


def config_of(revision: ConfigRevision) -> TrackingConfig:
    """The TrackingConfig a stored revision holds."""
    return TrackingConfig(
        **{name: getattr(revision, name) for name in FIELDS}, revision_id=revision.id
    )


def save_config(
    session: Session, config: TrackingConfig, actor: str, comment: str | None = None
) -> ConfigRevision:
    """Store ``config`` as the new active revision, with an audit entry before → after."""
    before = active_config(session)
    revision = ConfigRevision(
        **{name: getattr(config, name) for name in FIELDS},
        created_by=actor,
        comment=comment,
    )
    session.add(revision)
    session.flush()
    add_audit(
        session,
        actor,
        "config.update",
        target=f"revision {revision.id}",
        before=before.as_fields(),
        after=config.as_fields(),
    )
    session.commit()
    return revision


def config_history(session: Session, limit: int = 50) -> list[ConfigRevision]:
    """The newest ``limit`` revisions, newest first."""
    return list(
        session.scalars(select(ConfigRevision).order_by(ConfigRevision.id.desc()).limit(limit))
    )
