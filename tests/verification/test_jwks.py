"""The identity provider's key set: fetched with a timeout, cached, refetched on an
unknown kid at most once a minute, served stale (for a bounded time) while the provider
is down. Time is a clock the tests move."""

from __future__ import annotations

import pytest

from tally.verification.jwks import (
    LIFESPAN,
    REFETCH_INTERVAL,
    RETRY_AFTER,
    STALE_FOR,
    JwksUnavailable,
    KeySet,
    fetch_jwks,
    signing_keys,
)
from tests.helpers.identity_provider import call, expect_401


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def keyset(jwks, clock):
    return KeySet(jwks.url, clock=clock)


def test_a_flood_of_unknown_kids_is_at_most_one_refetch_a_minute(jwks, keyset, clock):
    rsa_kid = jwks.keys["rsa"][0]
    assert keyset.get(rsa_kid).algorithm_name == "RS256"
    assert jwks.fetches == 1
    for minute in range(3):
        for n in range(500):
            assert keyset.get(f"random-{minute}-{n}") is None
            clock.now += 0.01  # 500 tokens spread over 5 seconds
        assert jwks.fetches == 2 + minute, "one refetch for the whole flood"
        clock.now += REFETCH_INTERVAL
    assert keyset.get(rsa_kid) is not None


def test_keys_are_cached_then_refreshed_after_their_lifespan(jwks, keyset, clock):
    kid = jwks.keys["ec"][0]
    for _ in range(50):
        assert keyset.get(kid).algorithm_name == "ES256"
    assert jwks.fetches == 1
    clock.now += LIFESPAN
    assert keyset.get(kid) is not None
    assert jwks.fetches == 2


def test_cached_keys_keep_serving_while_the_provider_is_down(jwks, keyset, clock):
    kid = jwks.keys["ed"][0]
    assert keyset.get(kid).algorithm_name == "EdDSA"
    jwks.down = True
    clock.now += LIFESPAN + 10
    assert keyset.get(kid) is not None  # the refresh failed; the held keys still serve
    assert jwks.fetches == 2
    clock.now += STALE_FOR
    with pytest.raises(JwksUnavailable):  # but not for ever
        keyset.get(kid)
    jwks.down = False
    clock.now += REFETCH_INTERVAL
    assert keyset.get(kid) is not None


def test_without_keys_a_failed_fetch_is_retried_after_a_pause(jwks, keyset, clock):
    jwks.down = True
    for _ in range(10):
        with pytest.raises(JwksUnavailable):
            keyset.get("any")
    assert jwks.fetches == 1
    assert keyset.retry_after() == RETRY_AFTER
    clock.now += RETRY_AFTER
    jwks.down = False
    assert keyset.get(jwks.keys["rsa"][0]) is not None
    assert jwks.fetches == 2


def test_symmetric_keys_are_never_signing_keys():
    secret = {"kty": "oct", "k": "c2VjcmV0", "kid": "shared"}
    with pytest.raises(JwksUnavailable):
        signing_keys({"keys": [secret]})
    encryption_only = {"kty": "oct", "k": "c2VjcmV0", "kid": "enc", "use": "enc"}
    with pytest.raises(JwksUnavailable):
        signing_keys({"keys": [encryption_only]})


def test_fetch_failures_are_jwks_unavailable(jwks):
    with pytest.raises(JwksUnavailable):
        fetch_jwks(jwks.url.replace("/jwks.json", "/missing"), timeout=2)
    jwks.close()
    with pytest.raises(JwksUnavailable):
        fetch_jwks(jwks.url, timeout=2)


def test_through_the_api_a_flood_of_kids_is_one_refetch_a_minute(tally, idp, user_key, clock):
    tally.flask_app.extensions["tally"].key_sets.clock = clock
    assert call(tally, idp.token(), user_key).status_code == 200
    for n in range(30):
        expect_401(tally, user_key, idp.token(kid=f"random-{n}"), "token_unknown_kid")
    assert idp.fetches == 2
    clock.now += REFETCH_INTERVAL
    for n in range(30):
        expect_401(tally, user_key, idp.token(kid=f"again-{n}"), "token_unknown_kid")
    assert idp.fetches == 3
