"""The identity provider that end-user tokens are verified against (Clerk, Auth0,
Keycloak, any OIDC): its issuer, JWKS URL, optional audience, and which claims name the
user. A frozen value with the validation a person's input needs; no database, no Flask.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from urllib.parse import urlsplit

from tally.errors import InvalidInput

FIELDS = ("issuer", "jwks_url", "audience", "user_claim", "name_claim", "email_claim")
REQUIRED = ("issuer", "jwks_url", "user_claim")
MAX_URL_LENGTH = 2048
MAX_CLAIM_LENGTH = 255
# Claim names may be namespaced URLs (Auth0's "https://example.com/email"); no spaces.
CLAIM_RE = re.compile(r"[^\s]{1,255}")
# A JWKS may be fetched over plain HTTP only from this machine (a local IdP, the tests).
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class IdpFieldError(InvalidInput):
    """An identity-provider field or value that is not allowed. ``field`` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(message, field)


@dataclass(frozen=True)
class IdpConfig:
    """Where end-user tokens come from and how they name the user.

    ``audience`` is empty for providers whose tokens carry no ``aud`` (Clerk's session
    tokens); ``name_claim`` and ``email_claim`` may be empty (not read).
    """

    issuer: str = ""
    jwks_url: str = ""
    audience: str = ""
    user_claim: str = "sub"
    name_claim: str = "name"
    email_claim: str = "email"

    @property
    def configured(self) -> bool:
        """True once an issuer and a JWKS URL are set: tokens can be verified."""
        return bool(self.issuer and self.jwks_url)

    def as_fields(self) -> dict[str, str]:
        """Every field as text, in :data:`FIELDS` order."""
        values = asdict(self)
        return {name: values[name] for name in FIELDS}

    def with_fields(self, fields: dict[str, str]) -> IdpConfig:
        """A copy with ``fields`` (text, as a person typed it) applied and validated."""
        for name in fields:
            if name not in FIELDS:
                raise IdpFieldError(name, f"unknown field {name!r}; fields are {', '.join(FIELDS)}")
        changes = {name: parse_field(name, value) for name, value in fields.items()}
        config = replace(self, **changes)
        for name in REQUIRED:
            if not getattr(config, name):
                raise IdpFieldError(name, f"{name} is required")
        return config


def parse_field(name: str, raw: str) -> str:
    """Validate one field typed as text; return it stripped or raise IdpFieldError."""
    value = (raw or "").strip()
    if name == "jwks_url":
        return check_url(name, value, allow_http_loopback=True)
    if name == "issuer":
        if len(value) > MAX_URL_LENGTH:
            raise IdpFieldError(name, f"issuer must be at most {MAX_URL_LENGTH} characters")
        return value  # compared with the token's iss exactly, as the provider spells it
    if name == "audience":
        if len(value) > MAX_URL_LENGTH:
            raise IdpFieldError(name, f"audience must be at most {MAX_URL_LENGTH} characters")
        return value
    if value and not CLAIM_RE.fullmatch(value):
        raise IdpFieldError(
            name, f"{name} must be a claim name of 1 to {MAX_CLAIM_LENGTH} characters, no spaces"
        )
    return value


def check_url(name: str, value: str, allow_http_loopback: bool) -> str:
    """An https URL (http only for a loopback host when allowed), or IdpFieldError."""
    if not value:
        return value
    if len(value) > MAX_URL_LENGTH:
        raise IdpFieldError(name, f"{name} must be at most {MAX_URL_LENGTH} characters")
    parts = urlsplit(value)
    loopback = (parts.hostname or "") in LOOPBACK_HOSTS
    if not parts.netloc or not (
        parts.scheme == "https" or (parts.scheme == "http" and loopback and allow_http_loopback)
    ):
        raise IdpFieldError(
            name, f"{name} must be an https:// URL (http:// only on this machine), got {value!r}"
        )
    return value
