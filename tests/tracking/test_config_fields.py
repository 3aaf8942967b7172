"""The tracking config as an operator types it (console form, CLI): each refusal's whole
message, values with spaces around them, and what an operator is warned of."""

from __future__ import annotations

import pytest

from tally.tracking.config import ConfigFieldError, TrackingConfig, parse_field

PREFIX = "prefix must be at most 64 characters of A-Z, a-z, 0-9, '.', '_' or '-'"
LENGTH = "hash_length must be a whole number from 8 to 64"
FIELDS = (
    "enabled, prefix, hash_mode, hash_length, dialect, cache_key, forward_profile, require_identity"
)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("prefix", "has space", PREFIX),
        ("prefix", 5, PREFIX),  # not text at all (JSON)
        ("hash_length", "ten", LENGTH),
        ("hash_length", None, LENGTH),
        ("hash_length", "65", LENGTH),
        ("enabled", True, "enabled must be on or off, got True"),
        ("color", "blue", f"unknown field 'color'; fields are {FIELDS}"),
    ],
)
def test_a_refusal_is_the_whole_message_naming_the_field(field, value, message):
    with pytest.raises(ConfigFieldError) as info:
        parse_field(field, value)
    assert (info.value.field, str(info.value)) == (field, message)


@pytest.mark.parametrize(
    ("field", "typed", "value"),
    [
        ("enabled", " on ", True),
        ("prefix", " acme\t", "acme"),
        ("hash_length", " 20 ", 20),
        ("hash_length", 20, 20),
        ("dialect", " orq", "orq"),
    ],
)
def test_values_are_read_without_the_spaces_around_them(field, typed, value):
    assert parse_field(field, typed) == value


def test_a_changed_config_is_no_stored_revision_yet():
    stored = TrackingConfig(revision_id=3)
    changed = stored.with_fields({"prefix": "acme"})
    assert (changed.prefix, changed.revision_id) == ("acme", None)


@pytest.mark.parametrize(("prefix", "room"), [("", 255), ("acme", 250)])
def test_the_none_mode_warning_says_how_long_an_id_may_be(prefix, room):
    config = TrackingConfig(hash_mode="none", prefix=prefix)
    assert config.length_warning() == (
        "The openrouter dialect takes identifiers of at most 255 characters: requests whose "
        f"end-user id is longer than {room} characters will be refused with 400. A hash mode "
        "avoids this."
    )
