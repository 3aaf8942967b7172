"""Two internal ids whose SHA-256 digests agree on their first 8 hex characters: under
``hash_mode=sha256 hash_length=8`` (prefix ``tally``) both are sent upstream as SHARED.

Found once, by brute force: hashing ``f"collide-{i}"`` for i = 0, 1, 2, … until two
8-hex prefixes agreed (37,897 ids; a birthday search of 2^32 values takes about 77,000 on
average)::

    seen = {}
    for i in itertools.count():
        prefix = hashlib.sha256(f"collide-{i}".encode()).hexdigest()[:8]
        if prefix in seen:
            break
        seen[prefix] = i
"""

from __future__ import annotations

import hashlib

from tests.helpers.rows import configure

FIRST, SECOND = "collide-14550", "collide-37896"
SHARED = "tally_ab4ef502"
COLLIDING = {"hash_mode": "sha256", "hash_length": "8"}


def sha256_identifier(internal_id: str, length: int = 8) -> str:
    """What Tally sends for ``internal_id`` under sha256 with the prefix ``tally``."""
    return "tally_" + hashlib.sha256(internal_id.encode()).hexdigest()[:length]


def make_them_collide(flask_app) -> int:
    """Save the config under which FIRST and SECOND share SHARED; its revision id."""
    return configure(flask_app, **COLLIDING)
