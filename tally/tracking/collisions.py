"""How likely two end users are to share a hashed upstream identifier: the birthday
bound for ``n`` users and ``L`` hex characters kept of the digest,
p ≈ 1 − exp(−n(n−1) / (2·16^L)), and the warning the config preview and ``config set``
give when it reaches 1 %. In ``none`` mode identifiers are the ids themselves: no
warning (a prefix and id spelling another's is a different matter, docs/architecture.md).
"""

from __future__ import annotations

import math

from tally.tracking.config import TrackingConfig

WARN_AT = 0.01  # warn from a 1 % chance of a collision among the current users
SAFE_BELOW = 0.001  # the length suggested brings it under 0.1 %
MAX_HASH_LENGTH = 64  # a SHA-256 digest in hex


def collision_probability(users: int, hex_chars: int) -> float:
    """The chance that at least two of ``users`` ids share the first ``hex_chars`` hex
    characters of their digests (uniform digests; the birthday bound)."""
    if users < 2:
        return 0.0
    pairs = users * (users - 1)
    return -math.expm1(-pairs / (2 * 16**hex_chars))  # expm1: exact for tiny chances


def safe_length(users: int, start: int = 8) -> int | None:
    """The shortest hash_length from ``start`` whose collision chance among ``users`` is
    under 0.1 % (None: even 64 is not, which takes far more users than exist)."""
    for length in range(start, MAX_HASH_LENGTH + 1):
        if collision_probability(users, length) < SAFE_BELOW:
            return length
    return None


def collision_warning(config: TrackingConfig, users: int) -> str | None:
    """What an operator should know before saving ``config`` with ``users`` end users
    known: the chance two already share an identifier, when it is 1 % or more, and the
    hash_length that would bring it under 0.1 %. None when identifiers are not hashes."""
    if not config.enabled or config.hash_mode == "none":
        return None
    chance = collision_probability(users, config.hash_length)
    if chance < WARN_AT:
        return None
    shown = "over 99.9 %" if chance > 0.999 else f"{chance * 100:.1f} %"
    warning = (
        f"Collision risk: with {users:,} end users and a hash_length of "
        f"{config.hash_length}, the chance that two of them share an upstream identifier "
        f"is {shown} (the router would see them as one user; trace lists both), and it "
        "grows as users are added."
    )
    better = safe_length(users, config.hash_length + 1)
    if better is not None:
        warning += f" A hash_length of {better} brings it under 0.1 %."
    return warning
