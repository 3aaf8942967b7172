"""Bearer secrets minted by Tally (API keys, admin API tokens): made once from 256
random bits, shown to their owner once, stored only as a SHA-256 digest."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

DISPLAY_LENGTH = 12  # characters of the secret kept to tell it apart on a list


@dataclass(frozen=True)
class Minted:
    """A new secret: ``raw`` for its owner (once), ``digest`` and ``display`` to keep."""

    raw: str
    digest: str
    display: str


def hash_secret(raw: str) -> str:
    """SHA-256 hex of a secret: secrets are 256-bit random, so a fast hash is safe here."""
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def mint_secret(prefix: str) -> Minted:
    """A new secret starting with ``prefix`` (which says what kind of secret it is)."""
    raw = prefix + secrets.token_urlsafe(32)
    return Minted(raw, hash_secret(raw), raw[:DISPLAY_LENGTH])
