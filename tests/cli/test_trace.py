"""``trace IDENTIFIER``: the user behind an upstream identifier as one block of
field=value lines; a shared identifier (a collision) says so and gives one block per
user, first sent first."""

from __future__ import annotations

from datetime import datetime

import pytest

from tally.end_users.directory import upsert_end_user, upsert_identifier
from tests.helpers.collisions import FIRST, SECOND, SHARED

MONDAY = datetime(2026, 11, 30, 9, 15, 0)
TUESDAY = datetime(2026, 12, 1, 17, 45, 30)


@pytest.fixture
def first(db):
    """FIRST, with a profile, sent as SHARED twice (Monday, then Tuesday)."""
    user = upsert_end_user(db, FIRST, {"display_name": "Ada", "email": "ada@example.com"})
    upsert_identifier(db, SHARED, user, 1, now=MONDAY)
    upsert_identifier(db, SHARED, user, 1, now=TUESDAY)
    db.commit()
    return user


FIRST_BLOCK = [
    f"identifier={SHARED}",
    f"internal_id={FIRST}",
    "display_name=Ada",
    "email=ada@example.com",
    "config_revision=1",
    "first_seen=2026-11-30 09:15:00Z",
    "last_seen=2026-12-01 17:45:30Z",
    "requests=2",
]


def test_one_user_is_one_block_exactly(runner, first):
    result = runner.invoke(args=["trace", SHARED])
    assert result.exit_code == 0
    assert result.output.splitlines() == FIRST_BLOCK


def test_a_shared_identifier_names_every_user(runner, db, first):
    second = upsert_end_user(db, SECOND)
    upsert_identifier(db, SHARED, second, None, now=TUESDAY)
    db.commit()
    result = runner.invoke(args=["trace", SHARED])
    assert result.exit_code == 0  # found: a collision is an answer, not an error
    assert result.output.splitlines() == [
        f"collision: {SHARED} is shared by 2 users (hash collision); one block per user"
        " follows, first sent first",
        "",
        *FIRST_BLOCK,
        "",
        f"identifier={SHARED}",
        f"internal_id={SECOND}",
        "config_revision=-",
        "first_seen=2026-12-01 17:45:30Z",
        "last_seen=2026-12-01 17:45:30Z",
        "requests=1",
    ]


def test_a_prefix_of_a_shared_identifier_finds_nothing(runner, first):
    result = runner.invoke(args=["trace", SHARED[:-1]])
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: not found: no end user was ever sent as {SHARED[:-1]!r} (or that user was erased)"
    )
