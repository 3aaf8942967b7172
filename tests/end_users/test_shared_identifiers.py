"""Identifier collisions (issue 18): with a short hash_length two end users can be sent
upstream as one identifier. Each (identifier, user) pair is its own row, recorded
idempotently and safely under concurrency; each request row names its own user's row;
trace finds every user behind the identifier; erasing one leaves the other."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import func, select

from tally.db import utcnow
from tally.end_users.claims import EndUserClaim
from tally.end_users.directory import (
    shared_note,
    trace_identifier,
    trace_users,
    upsert_end_user,
    upsert_identifier,
)
from tally.models import UpstreamIdentifier
from tally.privacy.erasure import erase_user
from tally.usage.call import CallRecord, Outcome
from tally.usage.records import record_calls
from tests.helpers.api import chat
from tests.helpers.collisions import FIRST, SECOND, SHARED, make_them_collide, sha256_identifier
from tests.helpers.rows import identifiers, request_rows
from tests.helpers.settings import HASH_KEY


def test_the_two_ids_really_collide():
    assert sha256_identifier(FIRST) == sha256_identifier(SECOND) == SHARED
    assert sha256_identifier(FIRST, 9) != sha256_identifier(SECOND, 9)


def test_two_colliding_users_each_get_their_row_through_the_api(tally, upstream):
    revision = make_them_collide(tally.flask_app)
    for user in (FIRST, SECOND, SECOND, FIRST, SECOND):
        assert chat(tally, user=user).status_code == 200
        assert upstream.last.body["user"] == SHARED
    found = identifiers(tally.flask_app)
    assert [(i.identifier, i.user.external_id, i.revision_id, i.request_count) for i in found] == [
        (SHARED, FIRST, revision, 2),
        (SHARED, SECOND, revision, 3),
    ]
    by_user = {i.user_id: i.id for i in found}
    rows = request_rows(tally.flask_app)
    assert [row.user.external_id for row in rows] == [FIRST, SECOND, SECOND, FIRST, SECOND]
    # each request row names its own user's identifier row, not the first user's
    assert all(row.identifier_id == by_user[row.user_id] for row in rows)


def test_trace_finds_every_user_behind_a_shared_identifier(tally, db):
    make_them_collide(tally.flask_app)
    chat(tally, user=SECOND)  # the second user is seen first: first sent, first traced
    chat(tally, user=FIRST)
    traced = trace_users(db, f"  {SHARED} ")
    assert [t.user.external_id for t in traced] == [SECOND, FIRST]
    assert shared_note(traced) == "shared by 2 users (hash collision)"
    assert trace_identifier(db, SHARED).user.external_id == SECOND
    assert trace_users(db, "tally_00000000") == []
    assert shared_note(trace_users(db, SHARED)[:1]) is None


def test_in_none_mode_a_shared_identifier_is_a_prefix_collision(tally, db):
    # prefix a + id b_c and prefix a_b + id c both give a_b_c
    from tests.helpers.rows import configure

    configure(tally.flask_app, hash_mode="none", prefix="a")
    chat(tally, user="b_c")
    configure(tally.flask_app, hash_mode="none", prefix="a_b")
    chat(tally, user="c")
    traced = trace_users(db, "a_b_c")
    assert [t.user.external_id for t in traced] == ["b_c", "c"]
    assert shared_note(traced) == "shared by 2 users (prefix and id collide)"


def _call(user: str, identifier: str = SHARED, request_id: str | None = None):
    call = CallRecord(
        request_id=request_id or uuid.uuid4().hex,
        api_key_id=None,
        claim=EndUserClaim(user, "user"),
        identifier=identifier,
        revision_id=1,
        model="openai/gpt-4o-mini",
        stream=False,
    )
    return call, Outcome(status=200, usage={"total_tokens": 3}), utcnow()


def _pairs(db) -> list[tuple[str, str, int]]:
    db.expire_all()
    rows = db.scalars(select(UpstreamIdentifier).order_by(UpstreamIdentifier.id)).all()
    return [(r.identifier, r.user.external_id, r.request_count) for r in rows]


def test_one_batch_with_both_users_records_both_and_a_replay_adds_nothing(app, db):
    batch = [_call(FIRST), _call(SECOND), _call(FIRST), _call("bystander", "tally_bystander")]
    record_calls(db, batch)
    record_calls(db, batch)  # a spooled batch replayed: idempotent
    assert sorted(_pairs(db)) == [
        (SHARED, FIRST, 2),
        (SHARED, SECOND, 1),
        ("tally_bystander", "bystander", 1),
    ]


def test_a_batch_finds_its_own_row_of_an_identifier_shared_with_others(app, db):
    record_calls(db, [_call(FIRST)])
    record_calls(db, [_call(SECOND), _call(SECOND)])
    record_calls(db, [_call(FIRST)])
    assert _pairs(db) == [(SHARED, FIRST, 2), (SHARED, SECOND, 2)]
    by_pair = {(i.identifier, i.user_id): i.id for i in identifiers(app)}
    rows = request_rows(app)
    assert len(rows) == 4
    assert all(r.identifier_id == by_pair[(SHARED, r.user_id)] for r in rows)


def test_the_single_upsert_keeps_one_row_per_pair(app, db):
    first = upsert_end_user(db, FIRST)
    second = upsert_end_user(db, SECOND)
    a = upsert_identifier(db, SHARED, first, 1)
    b = upsert_identifier(db, SHARED, second, 1)
    assert upsert_identifier(db, SHARED, first, 1) == a != b
    db.commit()
    assert _pairs(db) == [(SHARED, FIRST, 2), (SHARED, SECOND, 1)]


@pytest.mark.parametrize("users", [(FIRST, FIRST), (FIRST, SECOND)], ids=["same", "colliding"])
def test_concurrent_writers(app, users):
    """Two writers (the usage writer and a worker writing for itself, two instances)
    commit at the same instant: the same pair is one row counting both, two colliding
    users are two rows."""
    sessions = app.extensions["tally"].sessions
    for _round in range(5):
        barrier = threading.Barrier(2)
        errors = []

        def write(user: str, barrier=barrier, errors=errors) -> None:
            try:
                with sessions() as session:
                    barrier.wait()
                    record_calls(session, [_call(user)])
            except Exception as exc:  # reported below, with the round
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(user,)) for user in users]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
    with sessions() as session:
        found = _pairs(session)
        rows = session.scalar(select(func.count()).select_from(UpstreamIdentifier))
    if users[0] == users[1]:
        assert found == [(SHARED, FIRST, 10)] and rows == 1
    else:
        assert sorted(found) == [(SHARED, FIRST, 5), (SHARED, SECOND, 5)]


def test_erasing_one_user_leaves_the_other_traceable(tally, db):
    make_them_collide(tally.flask_app)
    chat(tally, user=FIRST)
    chat(tally, user=SECOND)
    erased = erase_user(db, FIRST, "test", HASH_KEY.encode())
    assert erased.identifiers == 1
    traced = trace_users(db, SHARED)
    assert [(t.user.external_id, t.request_count) for t in traced] == [(SECOND, 1)]
    rows = request_rows(tally.flask_app)
    assert [row.identifier_id for row in rows] == [None, traced[0].id]
    result = tally.flask_app.test_cli_runner().invoke(args=["trace", SHARED])
    assert result.exit_code == 0
    assert "collision" not in result.output
    assert "internal_id=collide-37896" in result.output.splitlines()
