"""The birthday bound behind the config's collision warning (tally/tracking/collisions.py):
p = 1 − exp(−n(n−1) / (2·16^L)) for n users and L hex characters."""

from __future__ import annotations

import math

import pytest

from tally.tracking.collisions import collision_probability, collision_warning, safe_length
from tally.tracking.config import TrackingConfig


@pytest.mark.parametrize(
    ("users", "length", "expected"),
    [
        (0, 8, 0.0),
        (1, 8, 0.0),
        (2, 8, 1 / 16**8),  # one pair: exactly one chance in 16^8 (to first order)
        (77_163, 8, 0.5),  # the birthday bound's median for 2^32 values
        (12_000, 8, 0.01662),
        (100_000, 16, 2.71e-10),
        (10**9, 64, 4.32e-60),
    ],
)
def test_collision_probability(users, length, expected):
    assert collision_probability(users, length) == pytest.approx(expected, rel=1e-3, abs=1e-12)


def test_the_probability_is_the_formula():
    n, length = 50_000, 9
    assert collision_probability(n, length) == pytest.approx(
        1 - math.exp(-n * (n - 1) / (2 * 16**length)), rel=1e-12
    )


@pytest.mark.parametrize(
    ("users", "start", "expected"),
    [(12_000, 9, 10), (12_000, 12, 12), (100_000, 8, 11), (10**9, 8, 18), (2, 8, 8)],
)
def test_safe_length_is_the_shortest_under_a_tenth_of_a_percent(users, start, expected):
    length = safe_length(users, start)
    assert length == expected
    assert collision_probability(users, length) < 0.001
    if length > start:
        assert collision_probability(users, length - 1) >= 0.001


def test_the_warning_starts_at_one_percent():
    config = TrackingConfig(hash_mode="sha256", hash_length=8)
    assert collision_warning(config, 9_291) is None  # 0.99979 %
    assert collision_warning(config, 9_292).startswith(
        "Collision risk: with 9,292 end users and a hash_length of 8, the chance that two of "
        "them share an upstream identifier is 1.0 % ("
    )


def test_a_near_certain_collision_is_said_so():
    config = TrackingConfig(hash_mode="hmac-sha256", hash_length=8)
    warning = collision_warning(config, 1_000_000)
    assert "share an upstream identifier is over 99.9 % (" in warning
    assert warning.endswith("A hash_length of 13 brings it under 0.1 %.")


@pytest.mark.parametrize(
    "config",
    [
        TrackingConfig(hash_mode="none", hash_length=8),
        TrackingConfig(enabled=False, hash_mode="sha256", hash_length=8),
        TrackingConfig(hash_mode="sha256", hash_length=16),
    ],
)
def test_no_warning_without_a_likely_collision(config):
    assert collision_warning(config, 100_000) is None
