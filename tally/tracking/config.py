"""The operator's tracking config: its fields, their defaults (PRODUCT.md's first
values) and the validation a person's input needs. A frozen value, no database:
tally.tracking.identifiers derives and attaches identifiers under it, tally.tracking.store
keeps its revisions."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Any

from tally.errors import InvalidInput

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


class ConfigFieldError(InvalidInput):
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
    def profile_note(self) -> str | None:
        """Why ``forward_profile=on`` does nothing in this config (PRODUCT.md: orq only,
        never in a hash mode), or None when it is off or does forward the profile."""
        if not self.enabled or not self.forward_profile or self.sends_profile:
            return None
        if self.hash_mode != "none":
            return (
                f"forward_profile=on does nothing in a hash mode ({self.hash_mode}): no "
                "profile field ever leaves then. Only hash_mode none with the orq dialect "
                "forwards display_name, email, metadata and tags."
            )
        return (
            f"forward_profile=on does nothing with the {self.dialect} dialect: only orq "
            "forwards display_name, email, metadata and tags."
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
