"""Operators' new passwords are scored by zxcvbn with the account's e-mail and the
product's words as what an attacker knows (tally/operators/passwords.py)."""

from __future__ import annotations

import pytest

from tally.operators.passwords import password_weakness, user_inputs

EMAIL = "jane.doe@acme-corp.example"


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("password", "this is a top-10 common password"),
        ("qwertyuiop", "common password"),
        ("Summer2026", "similar to a commonly used password"),
        ("tally123", "made of your e-mail or this product's words"),
        ("tallygateway", "made of your e-mail or this product's words"),
        ("jane.doe@acme-corp.example", "made of your e-mail"),
        ("janedoe2026", "made of your e-mail"),
        ("acmecorp!", "made of your e-mail"),
        ("a" * 200, "repeats"),
    ],
)
def test_weak_passwords_are_refused_with_why_and_how(password, why):
    message = password_weakness(password, EMAIL)
    assert message is not None
    assert message.startswith("the password is too easy to guess: ")
    assert why in message.lower()
    assert "Use a longer passphrase of several unrelated words." in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "password",
    [
        "correct horse battery",
        "walking the console route by route 7",
        "pZ7!qLm#2vRt" * 85,  # past zxcvbn's 72 characters: their first 72 are scored
    ],
)
def test_strong_passwords_pass(password):
    assert password_weakness(password, EMAIL) is None


def test_the_user_inputs_are_the_e_mail_its_parts_and_the_product_words():
    words = user_inputs(" Jane.Doe@Acme-Corp.Example ")
    assert words[:3] == ["jane.doe@acme-corp.example", "jane.doe", "acme-corp.example"]
    assert {"jane", "doe", "acme-corp", "example", "tally", "gateway", "console"} <= set(words)
    assert len(words) == len(set(words))
