"""Who a request is for (tally/end_users/claims.py): the precedence of what a client may
send, each refusal exactly as the API's 400 carries it, and the sizes right at the limits."""

from __future__ import annotations

import pytest

from tally.end_users.claims import EndUserClaim, resolve_end_user
from tally.errors import InvalidInput
from tally.proxy.openai_errors import status_of

LONG_EMAIL = "a" * 308 + "@example.com"  # 320 characters: the longest taken
PROFILE = {
    "display_name": "d" * 255,
    "logo_url": "https://" + "l" * 2040,
    "email": LONG_EMAIL,
    "metadata": [{f"k{i}": i for i in range(10)}, {f"j{i}": i for i in range(10)}],
    "tags": ["t" * 100] + [f"t{i}" for i in range(9)],
}


@pytest.mark.parametrize(
    ("body", "header", "bound", "claim"),
    [
        (
            {"identity": {"id": "i"}, "user": "u", "safety_identifier": "s"},
            "h",
            None,
            ("i", "identity"),
        ),
        ({"user": "u", "safety_identifier": "s"}, "h", None, ("u", "user")),
        ({"user": None, "safety_identifier": "s"}, "h", None, ("s", "safety_identifier")),
        ({"identity": None}, "  h \t", None, ("h", "header")),
        ({}, "   ", None, None),
        ({"user": "u"}, "h", "bound", ("bound", "key")),
    ],
)
def test_the_first_of_identity_user_safety_identifier_header_wins_and_a_bound_key_over_all(
    body, header, bound, claim
):
    found = resolve_end_user(body, header, bound)
    assert found == (EndUserClaim(*claim) if claim else None)


def test_a_verified_token_wins_over_the_client_but_not_over_a_bound_key():
    token = EndUserClaim("sub", "token", {"email": "a@b.co"})
    assert resolve_end_user({"user": "u"}, "h", None, token) is token
    assert resolve_end_user({"user": "u"}, None, "bound", token) == EndUserClaim("bound", "key")


def test_the_profile_is_taken_up_to_each_limit():
    found = resolve_end_user({"identity": {"id": "x" * 255, **PROFILE, "plan": "p"}}, None, None)
    assert found == EndUserClaim("x" * 255, "identity", PROFILE)


def test_a_one_character_id_is_taken():
    assert resolve_end_user({"user": "u"}, None, None) == EndUserClaim("u", "user")


TOO_LONG = "must be 1 to 255 characters long, got"
REFUSALS = [
    ({"user": 42}, None, "user", "user must be a string of 1 to 255 characters"),
    ({"user": ""}, None, "user", f"user {TOO_LONG} 0"),
    ({"user": "u" * 256}, None, "user", f"user {TOO_LONG} 256"),
    (
        {"safety_identifier": 7},
        None,
        "safety_identifier",
        "safety_identifier must be a string of 1 to 255 characters",
    ),
    (
        {"safety_identifier": "s" * 256},
        None,
        "safety_identifier",
        f"safety_identifier {TOO_LONG} 256",
    ),
    ({}, "h" * 256, "X-Tally-User", f"X-Tally-User {TOO_LONG} 256"),
    ({"identity": "u1"}, None, "identity", "identity must be an object with at least an 'id'"),
    ({"identity": {}}, None, "identity.id", "identity.id must be a string of 1 to 255 characters"),
    ({"identity": {"id": "i" * 256}}, None, "identity.id", f"identity.id {TOO_LONG} 256"),
]
PROFILE_REFUSALS = [
    ("display_name", 7, "identity.display_name must be a string"),
    ("display_name", "d" * 256, "identity.display_name must be at most 255 characters, got 256"),
    ("logo_url", "l" * 2049, "identity.logo_url must be at most 2048 characters, got 2049"),
    ("email", "a" + LONG_EMAIL, "identity.email must be at most 320 characters, got 321"),
    ("email", "nope", "identity.email must be a valid e-mail address"),
    ("metadata", {"plan": "pro"}, "identity.metadata must be a list of objects"),
    ("metadata", {}, "identity.metadata must be a list of objects"),
    ("metadata", ["plan"], "identity.metadata must be a list of objects"),
    (
        "metadata",
        [{f"k{i}": i for i in range(21)}],
        "identity.metadata may hold at most 20 keys in all, got 21",
    ),
    ("tags", "vip", "identity.tags must be a list of strings"),
    ("tags", ["ok", 3], "identity.tags must be a list of strings"),
    ("tags", [f"t{i}" for i in range(11)], "identity.tags may hold at most 10 tags, got 11"),
    ("tags", ["t" * 101], "each of identity.tags must be at most 100 characters"),
]
REFUSALS += [
    ({"identity": {"id": "i", name: value}}, None, f"identity.{name}", message)
    for name, value, message in PROFILE_REFUSALS
]


@pytest.mark.parametrize(("body", "header", "param", "message"), REFUSALS)
@pytest.mark.parametrize("bound", [None, "bound"])  # a bound key's client is checked too
def test_a_bad_claim_is_refused_naming_its_field(body, header, param, message, bound):
    with pytest.raises(InvalidInput) as info:
        resolve_end_user(body, header, bound)
    error = info.value
    assert (status_of(error), error.field, error.code) == (400, param, "invalid_identity")
    assert error.message == message
