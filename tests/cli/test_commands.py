"""PRODUCT.md's CLI: keys, operators, trace, config; bad input exits 2 with one line."""

from collections import Counter

import pytest
from sqlalchemy import select

from tally.keys.api_keys import authenticate, hash_secret
from tally.models import ApiKey, AuditEntry, ConfigRevision, Operator


def test_keys_create_prints_the_key_alone_on_the_last_line(runner, db):
    result = runner.invoke(args=["keys", "create", "web"])
    assert result.exit_code == 0
    key = result.output.strip().splitlines()[-1]
    assert key.startswith("tly_") and " " not in key
    row = db.scalars(select(ApiKey)).one()
    assert row.name == "web" and row.key_hash == hash_secret(key)
    assert key not in row.key_hash and row.display_prefix == key[:12]
    assert authenticate(db, key).name == "web"


def test_keys_create_bound_to_a_user(runner, db):
    result = runner.invoke(args=["keys", "create", "svc", "--user", "user_42"])
    key = result.output.strip().splitlines()[-1]
    assert authenticate(db, key).bound_external_id == "user_42"


def test_keys_revoke_stops_the_key(runner, db):
    key = runner.invoke(args=["keys", "create", "web"]).output.strip().splitlines()[-1]
    result = runner.invoke(args=["keys", "revoke", "web"])
    assert result.exit_code == 0
    assert authenticate(db, key) is None
    actions = db.scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
    assert actions == ["key.create", "key.revoke"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["keys", "revoke", "ghost"], "Error: no key named 'ghost'"),
        (["config", "set", "hash_mode=md5"], "Error: hash_mode must be one of"),
        (["config", "set", "colour=blue"], "Error: unknown field 'colour'"),
        (["config", "set", "prefix"], "Error: expected FIELD=VALUE, got 'prefix'"),
        (["config", "set", "enabled=maybe"], "Error: enabled must be on or off"),
        (
            ["operators", "create", "not-an-email", "--role", "admin", "--password", "longenough"],
            "Error: 'not-an-email' is not a valid e-mail address",
        ),
        (
            ["operators", "create", "a@example.com", "--role", "admin", "--password", "short"],
            "Error: the password must be at least 8 characters",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(runner, args, message):
    result = runner.invoke(args=args)
    assert result.exit_code == 2
    assert result.output.strip().startswith(message)
    assert len(result.output.strip().splitlines()) == 1


def test_duplicate_key_name_is_refused(runner):
    runner.invoke(args=["keys", "create", "web"])
    result = runner.invoke(args=["keys", "create", "web"])
    assert result.exit_code == 2
    assert "already exists" in result.output


def test_config_show_lists_every_field(runner):
    result = runner.invoke(args=["config", "show"])
    assert result.output.splitlines() == [
        "enabled=on",
        "prefix=tally",
        "hash_mode=hmac-sha256",
        "hash_length=16",
        "dialect=openrouter",
        "cache_key=off",
        "forward_profile=off",
        "require_identity=off",
    ]


def test_config_set_makes_a_revision_made_by_the_cli(runner, db):
    result = runner.invoke(args=["config", "set", "hash_mode=sha256", "prefix=acme"])
    assert result.exit_code == 0
    shown = runner.invoke(args=["config", "show"]).output.splitlines()
    assert "hash_mode=sha256" in shown and "prefix=acme" in shown
    revision = db.scalars(select(ConfigRevision).order_by(ConfigRevision.id.desc())).first()
    assert (revision.id, revision.created_by, revision.prefix) == (2, "cli", "acme")
    audit = db.scalars(select(AuditEntry)).one()
    assert audit.action == "config.update" and audit.actor == "cli"
    assert audit.before["prefix"] == "tally" and audit.after["prefix"] == "acme"


def test_config_set_accepts_an_empty_prefix(runner):
    assert runner.invoke(args=["config", "set", "prefix="]).exit_code == 0
    assert "prefix=" in runner.invoke(args=["config", "show"]).output.splitlines()


def test_operators_create_stores_only_a_hash(runner, db):
    result = runner.invoke(
        args=[
            "operators",
            "create",
            "Ops@Example.com",
            "--role",
            "support",
            "--password",
            "correct horse",
        ]
    )
    assert result.exit_code == 0, result.output
    operator = db.scalars(select(Operator)).one()
    assert (operator.email, operator.role) == ("ops@example.com", "support")
    assert operator.password_hash.startswith("$argon2id$")
    assert "correct horse" not in operator.password_hash


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("password", "this is a top-10 common password."),
        ("tally123", "made of your e-mail or this product's words."),
        ("Summer2026", "this is similar to a commonly used password."),
        ("ops@example.com", "made of your e-mail or this product's words."),
        ("opsexample", "made of your e-mail or this product's words."),
    ],
)
def test_operators_create_refuses_a_guessable_password(runner, db, password, why):
    """PRODUCT.md: short, common or guessable from the e-mail (zxcvbn below 3): exit 2,
    one line that says why and how to choose a better one; nothing is created."""
    result = runner.invoke(
        args=["operators", "create", "ops@example.com", "--role", "admin", "--password", password]
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Error: the password is too easy to guess: ")
    assert why in lines[0]
    assert "Use a longer passphrase of several unrelated words." in lines[0]
    assert db.scalars(select(Operator)).first() is None


def test_trace_an_unknown_identifier(runner):
    result = runner.invoke(args=["trace", "tally_0000"])
    assert result.exit_code == 1
    assert "no end user was ever sent as 'tally_0000'" in result.output


def test_dev_seed_writes_demo_traffic(runner, client):
    result = runner.invoke(args=["dev", "seed", "--requests", "300", "--users", "12"])
    assert result.exit_code == 0
    assert result.output.strip() == "Seeded 300 demo requests for 12 demo users."
    from tests.helpers.rows import end_users, identifiers, request_rows

    app = client.application
    rows = request_rows(app)
    assert len(rows) == 300 and all(r.is_demo for r in rows)
    users, sent = end_users(app), identifiers(app)
    assert len(users) == 12 and len(sent) == 12
    # recorded as the API records calls: an identifier counts every request of its user
    per_user = Counter(r.user_id for r in rows)
    assert {i.user_id: i.request_count for i in sent} == per_user
    first = next(i for i in sent if i.user_id == users[0].id)
    traced = runner.invoke(args=["trace", first.identifier])
    assert f"internal_id={users[0].external_id}" in traced.output
    assert f"requests={per_user[users[0].id]}" in traced.output


def test_unknown_command_exits_2(runner):
    assert runner.invoke(args=["keys", "explode"]).exit_code == 2
