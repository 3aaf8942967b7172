"""PRODUCT.md's ``limits`` commands: show, set, set tier_key, unset, reset; audited;
bad input is one line and exit status 2."""

import pytest
from sqlalchemy import select

from tally.models import AuditEntry, LimitReset

DEFAULT_LINE = (
    "tier:default messages=1000 rpm=none daily_tokens=none monthly_tokens=none "
    "daily_budget=none monthly_budget=none"
)


def test_show_lists_the_shipped_default(runner):
    result = runner.invoke(args=["limits", "show"])
    assert result.exit_code == 0
    assert result.output.splitlines() == [DEFAULT_LINE, "tier_key=plan"]


def test_set_show_unset(runner, make_key):
    make_key("mobile-app")
    commands = [
        ["limits", "set", "tier:pro", "messages=5000"],
        ["limits", "set", "tier:default", "rpm=20", "daily_tokens=200000"],
        ["limits", "set", "tier:default", "daily_budget=2", "monthly_budget=20.50"],
        ["limits", "set", "user:u-42", "messages=none", "rpm=5"],
        ["limits", "set", "key:mobile-app", "monthly_budget=300"],
        ["limits", "set", "tier_key=tier"],
    ]
    for args in commands:
        result = runner.invoke(args=args)
        assert result.exit_code == 0, result.output
    assert runner.invoke(args=["limits", "show"]).output.splitlines() == [
        "tier:default messages=1000 rpm=20 daily_tokens=200000 monthly_tokens=none "
        "daily_budget=2 monthly_budget=20.5",
        "tier:pro messages=5000 rpm=none daily_tokens=none monthly_tokens=none "
        "daily_budget=none monthly_budget=none",
        "user:u-42 messages=none rpm=5",
        "key:mobile-app messages=none rpm=none daily_tokens=none monthly_tokens=none "
        "daily_budget=none monthly_budget=300",
        "tier_key=tier",
    ]
    assert runner.invoke(args=["limits", "unset", "user:u-42"]).exit_code == 0
    assert "user:u-42" not in runner.invoke(args=["limits", "show"]).output


def test_every_change_is_audited(runner, db):
    runner.invoke(args=["limits", "set", "tier:default", "messages=10"])
    runner.invoke(args=["limits", "set", "tier_key=tier"])
    runner.invoke(args=["limits", "reset", "user:u-1"])
    runner.invoke(args=["limits", "set", "tier:pro", "messages=10"])
    runner.invoke(args=["limits", "unset", "tier:pro"])
    entries = db.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    assert [(e.actor, e.action, e.target) for e in entries] == [
        ("cli", "limits.set", "tier:default"),
        ("cli", "limits.tier_key", "tier_key"),
        ("cli", "limits.reset", "user:u-1"),
        ("cli", "limits.set", "tier:pro"),
        ("cli", "limits.unset", "tier:pro"),
    ]
    assert entries[0].before["messages"] == 1000 and entries[0].after["messages"] == 10
    assert db.scalars(select(LimitReset.subject)).all() == ["user:u-1"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["limits", "set", "tier:default", "messages=lots"], "messages must be a whole number"),
        (["limits", "set", "tier:default", "messages=-1"], "messages must be a whole number"),
        (["limits", "set", "tier:default", "daily_budget=abc"], "daily_budget must be an amount"),
        (["limits", "set", "tier:default", "colour=red"], "unknown field 'colour'"),
        (["limits", "set", "tier:default", "messages"], "expected FIELD=VALUE"),
        (["limits", "set", "tier:default"], "expected at least one FIELD=VALUE"),
        (["limits", "set", "group:x", "messages=1"], "unknown scope 'group:x'"),
        (["limits", "set", "tier:b@d", "messages=1"], "tier names are"),
        (["limits", "set", "key:ghost", "messages=1"], "no API key named 'ghost'"),
        (["limits", "set", "tier_key=a b"], "tier_key must be"),
        (["limits", "unset", "tier:default"], "cannot be removed"),
        (["limits", "unset", "user:nobody"], "no policy for user:nobody"),
        (["limits", "reset", "tier:default"], "only user:INTERNAL_ID"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(runner, args, message):
    result = runner.invoke(args=args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]


def test_set_prints_the_policy_of_a_key_whose_name_has_a_space(runner, make_key):
    make_key("mobile app")
    result = runner.invoke(args=["limits", "set", "key:mobile app", "messages=900"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "key:mobile app messages=900 rpm=none daily_tokens=none monthly_tokens=none "
        "daily_budget=none monthly_budget=none"
    ]


def test_a_user_never_seen_gets_a_warning(runner):
    result = runner.invoke(args=["limits", "set", "user:ghost-9", "rpm=5"])
    assert result.exit_code == 0
    assert result.stdout.splitlines() == ["user:ghost-9 rpm=5"]
    assert result.stderr.strip() == (
        "Note: no end user with internal id ghost-9 has been seen yet; "
        "the limit will apply when they are."
    )
    known = runner.invoke(args=["limits", "set", "tier:pro", "rpm=5"])
    assert known.stderr == ""
