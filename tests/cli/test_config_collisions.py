"""``config set`` warns on stderr when the new hash_length makes a collision likely at the
current number of end users; the revision is saved all the same (exit 0)."""

from __future__ import annotations

from sqlalchemy import func, insert, select

from tally.db import utcnow
from tally.models import ConfigRevision, EndUser


def _seed(db, count: int) -> None:
    now = utcnow()
    rows = [{"external_id": f"seed-{n}", "first_seen": now, "last_seen": now} for n in range(count)]
    db.execute(insert(EndUser), rows)
    db.commit()


def test_a_likely_collision_is_a_warning_on_stderr(runner, db):
    _seed(db, 12_000)
    result = runner.invoke(args=["config", "set", "hash_length=8"])
    assert result.exit_code == 0
    assert result.stderr == (
        "Warning: Collision risk: with 12,000 end users and a hash_length of 8, the chance "
        "that two of them share an upstream identifier is 1.7 % (the router would see them "
        "as one user; trace lists both), and it grows as users are added. A hash_length of "
        "10 brings it under 0.1 %.\n"
    )
    assert result.stdout.splitlines()[0] == "Saved revision 2."
    assert "hash_length=8" in result.stdout.splitlines()
    assert db.scalar(select(func.count(ConfigRevision.id))) == 2


def test_no_warning_when_a_collision_is_unlikely(runner, db):
    _seed(db, 12_000)
    for fields in (["hash_length=10"], ["hash_length=8", "hash_mode=none"]):
        result = runner.invoke(args=["config", "set", *fields])
        assert result.exit_code == 0
        assert result.stderr == ""
