"""The tracking engine: derivation, config fields, attachment in each dialect."""

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tally.errors import InvalidInput
from tally.tracking.config import ConfigFieldError, TrackingConfig
from tally.tracking.identifiers import attach, check_identifier, derive_identifier

KEY = b"test-hash-key"
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.2}
PROFILE = {
    "display_name": "Ada",
    "email": "ada@example.com",
    "metadata": [{"plan": "pro"}],
    "tags": ["vip"],
    "logo_url": "https://example.com/a.png",
}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"hash_mode": "none"}, "tally_user_2N4Z"),
        ({"hash_mode": "none", "prefix": ""}, "user_2N4Z"),
        ({"hash_mode": "sha256"}, "tally_" + hashlib.sha256(b"user_2N4Z").hexdigest()[:16]),
        (
            {"hash_mode": "sha256", "prefix": "acme", "hash_length": "8"},
            "acme_" + hashlib.sha256(b"user_2N4Z").hexdigest()[:8],
        ),
        (
            {"hash_mode": "sha256", "prefix": "", "hash_length": "64"},
            hashlib.sha256(b"user_2N4Z").hexdigest(),
        ),
        ({}, "tally_" + hmac.new(KEY, b"user_2N4Z", hashlib.sha256).hexdigest()[:16]),
        (
            {"prefix": "intellisync", "hash_length": "32"},
            "intellisync_" + hmac.new(KEY, b"user_2N4Z", hashlib.sha256).hexdigest()[:32],
        ),
    ],
)
def test_derivation_follows_the_product_rules(fields, expected):
    config = TrackingConfig().with_fields(fields)
    assert derive_identifier(config, "user_2N4Z", KEY) == expected


def test_sha256_of_the_issue_example_is_the_known_digest():
    config = TrackingConfig().with_fields({"hash_mode": "sha256"})
    assert derive_identifier(config, "user_2N4Z", KEY) == "tally_1d5c0679c4a70ef7"


def test_unicode_ids_are_hashed_as_utf8():
    config = TrackingConfig().with_fields({"hash_mode": "sha256", "prefix": ""})
    expected = hashlib.sha256("zoë@例え.jp".encode()).hexdigest()[:16]
    assert derive_identifier(config, "zoë@例え.jp", KEY) == expected


def test_hmac_depends_on_the_key():
    config = TrackingConfig()
    assert derive_identifier(config, "u", b"one") != derive_identifier(config, "u", b"two")


ids = st.text(min_size=1, max_size=255)
prefixes = st.from_regex(r"[A-Za-z0-9._-]{0,64}", fullmatch=True)
modes = st.sampled_from(["hmac-sha256", "sha256"])


@given(internal_id=ids, prefix=prefixes, mode=modes, length=st.integers(8, 64))
def test_hashed_identifiers_are_stable_sized_and_prefixed(internal_id, prefix, mode, length):
    config = TrackingConfig(prefix=prefix, hash_mode=mode, hash_length=length)
    first = derive_identifier(config, internal_id, KEY)
    assert first == derive_identifier(config, internal_id, KEY)
    core = first[len(prefix) + 1 :] if prefix else first
    assert len(core) == length
    assert all(c in "0123456789abcdef" for c in core)
    assert first.startswith(f"{prefix}_") if prefix else "_" not in first


@given(internal_id=ids, prefix=prefixes)
def test_none_mode_keeps_the_id_verbatim(internal_id, prefix):
    config = TrackingConfig(prefix=prefix, hash_mode="none")
    expected = f"{prefix}_{internal_id}" if prefix else internal_id
    assert derive_identifier(config, internal_id, KEY) == expected


@given(a=ids, b=ids)
def test_different_users_get_different_identifiers(a, b):
    config = TrackingConfig(hash_length=64)
    if a != b:
        assert derive_identifier(config, a, KEY) != derive_identifier(config, b, KEY)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("prefix", "has space", "prefix must be at most 64 characters"),
        ("prefix", "x" * 65, "prefix must be at most 64 characters"),
        ("hash_mode", "md5", "hash_mode must be one of hmac-sha256, sha256, none"),
        ("hash_length", "7", "hash_length must be a whole number from 8 to 64"),
        ("hash_length", "65", "hash_length must be a whole number from 8 to 64"),
        ("hash_length", "ten", "hash_length must be a whole number from 8 to 64"),
        ("dialect", "anthropic", "dialect must be one of openrouter, openai, orq, compatible"),
        ("cache_key", "1", "cache_key must be on or off"),
        ("enabled", "yes", "enabled must be on or off"),
        ("forward_profile", "true", "forward_profile must be on or off"),
        ("color", "blue", "unknown field 'color'"),
    ],
)
def test_bad_config_values_are_refused_with_the_field_named(field, value, message):
    with pytest.raises(ConfigFieldError) as info:
        TrackingConfig().with_fields({field: value})
    assert info.value.field == field
    assert message in str(info.value)


def test_fields_round_trip_as_text():
    config = TrackingConfig().with_fields(
        {
            "enabled": "off",
            "prefix": "",
            "hash_mode": "none",
            "hash_length": "20",
            "dialect": "orq",
            "cache_key": "on",
            "forward_profile": "on",
            "require_identity": "on",
        }
    )
    assert config.as_fields() == {
        "enabled": "off",
        "prefix": "",
        "hash_mode": "none",
        "hash_length": "20",
        "dialect": "orq",
        "cache_key": "on",
        "forward_profile": "on",
        "require_identity": "on",
    }


CLIENT_SAID = {
    "user": "raw",
    "identity": {"id": "raw"},
    "safety_identifier": "raw-safety",
    "prompt_cache_key": "client-bucket",
}


@pytest.mark.parametrize("dialect", ["openrouter", "compatible"])
def test_user_dialects_set_user_and_drop_what_the_client_said(dialect):
    config = TrackingConfig(dialect=dialect)
    body = {**BODY, **CLIENT_SAID}
    assert attach(body, config, "tally_x", PROFILE) == {**BODY, "user": "tally_x"}


def test_openai_dialect_sets_safety_identifier():
    config = TrackingConfig(dialect="openai")
    body = {**BODY, **CLIENT_SAID}
    assert attach(body, config, "tally_x") == {**BODY, "safety_identifier": "tally_x"}


def test_openai_dialect_sets_user_on_embeddings_which_have_no_safety_identifier():
    config = TrackingConfig(dialect="openai", cache_key=True)
    body = {"model": "m", "input": "hi", **CLIENT_SAID}
    assert attach(body, config, "tally_x", embeddings=True) == {
        "model": "m",
        "input": "hi",
        "user": "tally_x",
    }


@pytest.mark.parametrize(
    ("dialect", "field", "value"),
    [
        ("openrouter", "user", "tally_x"),
        ("openai", "safety_identifier", "tally_x"),
        ("compatible", "user", "tally_x"),
        ("orq", "identity", {"id": "tally_x"}),
    ],
)
def test_cache_key_sends_the_identifier_as_prompt_cache_key(dialect, field, value):
    config = TrackingConfig(dialect=dialect, cache_key=True)
    body = {**BODY, **CLIENT_SAID}
    assert attach(body, config, "tally_x") == {**BODY, field: value, "prompt_cache_key": "tally_x"}


def test_cache_key_off_drops_the_clients_prompt_cache_key():
    body = {**BODY, "prompt_cache_key": "client-bucket"}
    assert attach(body, TrackingConfig(cache_key=False), None) == BODY


def test_openai_dialect_refuses_a_config_whose_identifiers_exceed_64():
    TrackingConfig().with_fields({"dialect": "openai", "prefix": "p" * 47, "hash_length": "16"})
    with pytest.raises(ConfigFieldError) as info:
        TrackingConfig().with_fields({"dialect": "openai", "prefix": "p" * 48})
    assert info.value.field == "hash_length"
    assert "at most 64 characters; this prefix and hash_length give 65" in str(info.value)
    # Other dialects take 255: the same config is fine there.
    TrackingConfig().with_fields({"dialect": "openrouter", "prefix": "p" * 64, "hash_length": "64"})


def test_length_warning_in_none_mode_says_how_long_an_id_may_be():
    config = TrackingConfig(dialect="openai", hash_mode="none", prefix="acme")
    assert "longer than 59 characters will be refused" in config.length_warning()
    assert TrackingConfig(dialect="openai").length_warning() is None
    assert "longer than 249" in TrackingConfig(hash_mode="none").length_warning()


def test_orq_sets_identity_id_only_by_default():
    config = TrackingConfig(dialect="orq", hash_mode="none")
    assert attach({**BODY, "user": "raw"}, config, "tally_raw", PROFILE) == {
        **BODY,
        "identity": {"id": "tally_raw"},
    }


def test_orq_forwards_the_profile_when_asked_and_unhashed():
    config = TrackingConfig(dialect="orq", hash_mode="none", forward_profile=True)
    assert attach(BODY, config, "tally_u", PROFILE)["identity"] == {
        "id": "tally_u",
        "display_name": "Ada",
        "email": "ada@example.com",
        "metadata": [{"plan": "pro"}],
        "tags": ["vip"],
    }


@pytest.mark.parametrize("mode", ["sha256", "hmac-sha256"])
def test_orq_never_forwards_a_profile_in_a_hash_mode(mode):
    config = TrackingConfig(dialect="orq", hash_mode=mode, forward_profile=True)
    assert attach(BODY, config, "tally_abc", PROFILE)["identity"] == {"id": "tally_abc"}


def test_disabled_tracking_strips_everything():
    config = TrackingConfig(enabled=False, dialect="orq", hash_mode="none", forward_profile=True)
    body = {**BODY, "user": "raw", "identity": {"id": "raw", "email": "a@b.co"}}
    assert attach(body, config, "tally_raw", PROFILE) == BODY


def test_attach_does_not_mutate_the_client_body():
    body = {**BODY, "user": "raw"}
    attach(body, TrackingConfig(), "tally_x")
    assert body == {**BODY, "user": "raw"}


def test_identifiers_longer_than_the_dialect_allows_are_refused():
    check_identifier("x" * 64, "safety_identifier", 64)
    with pytest.raises(InvalidInput) as info:
        check_identifier("x" * 65, "safety_identifier", 64)
    assert "65 characters; the limit is 64" in info.value.message


def test_identifiers_longer_than_255_are_refused_naming_the_field():
    check_identifier("x" * 255, "user")
    with pytest.raises(InvalidInput) as info:
        check_identifier("x" * 256, "identity.id")
    assert info.value.field == "identity.id"
    assert "256 characters; the limit is 255" in info.value.message
