"""PRODUCT.md's CLI for verified end users: ``keys create --user-token --origin`` and
``idp set/show``; bad input exits 2 with one line."""

import pytest
from sqlalchemy import select

from tally.keys.api_keys import authenticate
from tally.models import AuditEntry

CLERK = "https://clerk.example.com"
JWKS = "https://clerk.example.com/.well-known/jwks.json"


def test_keys_create_with_user_token_and_origins(runner, db):
    result = runner.invoke(
        args=[
            "keys", "create", "spa", "--user-token",
            "--origin", "https://App.example.com/", "--origin", "http://localhost:3000",
        ]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    key = result.output.strip().splitlines()[-1]
    assert key.startswith("tly_") and " " not in key
    found = authenticate(db, key)
    assert found.user_token is True
    assert found.origins == ("https://app.example.com", "http://localhost:3000")
    [entry] = db.scalars(select(AuditEntry)).all()
    assert entry.after["user_token"] is True and key not in str(entry.after)


def test_an_ordinary_key_needs_no_token_and_has_no_origins(runner, db):
    key = runner.invoke(args=["keys", "create", "web"]).output.strip().splitlines()[-1]
    found = authenticate(db, key)
    assert (found.user_token, found.origins) == (False, ())


def test_idp_set_then_show(runner):
    result = runner.invoke(args=["idp", "set", f"issuer={CLERK}", f"jwks_url={JWKS}"])
    assert result.exit_code == 0, result.output
    shown = runner.invoke(args=["idp", "show"])
    assert shown.exit_code == 0
    assert shown.output.splitlines() == [
        f"issuer={CLERK}",
        f"jwks_url={JWKS}",
        "audience=",
        "user_claim=sub",
        "name_claim=name",
        "email_claim=email",
    ]
    runner.invoke(args=["idp", "set", "audience=tally", "email_claim=mail"])
    shown = runner.invoke(args=["idp", "show"]).output.splitlines()
    assert "audience=tally" in shown and "email_claim=mail" in shown
    assert f"issuer={CLERK}" in shown  # fields not given keep their value


def test_idp_set_is_audited(runner, db):
    runner.invoke(args=["idp", "set", f"issuer={CLERK}", f"jwks_url={JWKS}"])
    [entry] = db.scalars(select(AuditEntry)).all()
    assert (entry.actor, entry.action, entry.after["issuer"]) == ("cli", "idp.update", CLERK)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["idp", "set", f"issuer={CLERK}"], "Error: jwks_url is required"),
        (["idp", "set", f"issuer={CLERK}", "jwks_url=http://evil.example/j"], "https://"),
        (["idp", "set", f"issuer={CLERK}", "jwks_url=ftp://x"], "https://"),
        (["idp", "set", "color=blue"], "Error: unknown field 'color'"),
        (["idp", "set", "issuer"], "Error: expected FIELD=VALUE"),
        (["idp", "set", f"issuer={CLERK}", f"jwks_url={JWKS}", "user_claim=a b"], "user_claim"),
        (["keys", "create", "x", "--user", "u", "--user-token"], "exclude each other"),
        (["keys", "create", "x", "--origin", "https://a.example/path"], "scheme://host"),
        (["keys", "create", "x", "--origin", "javascript:alert(1)"], "scheme://host"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(runner, args, message):
    result = runner.invoke(args=args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output
