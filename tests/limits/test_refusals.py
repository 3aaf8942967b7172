"""The 429 a used-up limit answers with (tally/limits/checks.py): the whole message, when
the limit frees up and Retry-After, for each limit and whom it holds; and how long the
counters behind them live."""

from __future__ import annotations

import os
import time

import pytest

from tally.errors import BudgetExceeded, RateLimited
from tally.limits.checks import build_checks, check_for, periods, refusal
from tally.limits.policy import Applicable
from tally.proxy.openai_errors import error_headers, status_of

NOW = 1_767_225_600.0 + 3600  # 2026-01-01T01:00:00Z
SPANS = periods(NOW)
USER = "for this user"


def refused(field, value, frees_in: float, label: str = USER):
    """The refusal of ``field`` limited to ``value``, freeing up ``frees_in`` seconds
    from now (its window's oldest hit or its period ends then)."""
    check = check_for(field, value, "user:u", label, SPANS)
    return refusal(check, [NOW + frees_in - 1, 0], NOW, {"X-RateLimit-Limit": "5"})


@pytest.mark.parametrize(
    ("seconds", "spoken"),
    [
        (1, "1 s"),
        (59, "59 s"),
        (60, "1 min"),
        (61, "1 min 1 s"),
        (3600, "1 h"),
        (3601, "1 h 1 s"),
        (3660, "1 h 1 min"),
        (3661, "1 h 1 min 1 s"),
        (86400, "24 h"),
    ],
)
def test_the_message_says_when_the_limit_frees_up(seconds, spoken):
    error = refused("messages", 100, seconds)
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW + seconds))
    assert type(error) is RateLimited and status_of(error) == 429
    assert error.message == (
        f"The message quota of 100 requests per rolling 24 hours for this user is used up. "
        f"It frees up in {spoken} (at {when}); retry after {seconds} seconds."
    )
    assert error_headers(error) == {"X-RateLimit-Limit": "5", "Retry-After": str(seconds)}


def test_a_limit_freeing_up_within_the_second_says_retry_after_1():
    check = check_for("rpm", 10, "user:u", USER, SPANS)
    error = refusal(check, [NOW - 0.5, 0], NOW, {})
    assert error_headers(error) == {"Retry-After": "1"}
    assert "It frees up in 1 s (at 2026-01-01T01:00:00Z); retry after 1 seconds." in error.message


@pytest.mark.parametrize(
    ("field", "value", "what"),
    [
        ("rpm", 10, "The rate limit of 10 requests per minute"),
        ("daily_tokens", 5000, "The daily limit of 5000 tokens (UTC day)"),
        ("monthly_tokens", 90000, "The monthly limit of 90000 tokens (calendar month, UTC)"),
        ("daily_budget", 2.5, "The daily budget of $2.5 (UTC day)"),
        ("monthly_budget", 40, "The monthly budget of $40 (calendar month, UTC)"),
    ],
)
def test_each_limit_is_named_with_its_amount(field, value, what):
    error = refused(field, value, 60)
    assert type(error) is (BudgetExceeded if field.endswith("budget") else RateLimited)
    assert error.message.startswith(f"{what} for this user is used up. It frees up in 1 min ")


@pytest.fixture
def tokyo():
    """The process's local time is not UTC."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Tokyo"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def test_the_time_it_frees_up_is_utc_whatever_the_servers_zone(tokyo):
    assert "(at 2026-01-01T01:01:00Z)" in refused("messages", 100, 60).message


def test_whom_a_limit_holds_is_said():
    limits = {"messages": 10, "daily_tokens": 100, "daily_budget": 1}
    for subject, label in [
        ("user:u", "for this user"),
        ("anon:3", "for anonymous requests of this API key"),
    ]:
        scope = Applicable(subject, limits, "tier:default", "key:acme", {"monthly_tokens": 9})
        checks = build_checks(scope, 3, NOW)
        assert [(c.field, c.subject, c.label) for c in checks] == [
            ("messages", subject, label),
            ("daily_tokens", subject, label),
            ("daily_budget", subject, label),
            ("monthly_tokens", "key:3", "for this API key as a whole"),
        ]


def test_counters_live_an_hour_past_their_period_and_windows_their_length():
    day_end, month_end = SPANS["day"][2], SPANS["month"][2]
    assert check_for("messages", 5, "user:u", USER, SPANS).ttl(NOW) == 86400
    assert check_for("rpm", 5, "user:u", USER, SPANS).ttl(NOW) == 60
    assert check_for("daily_tokens", 5, "user:u", USER, SPANS).ttl(NOW) == day_end - NOW + 3600
    assert check_for("monthly_budget", 5, "user:u", USER, SPANS).ttl(NOW) == (
        month_end - NOW + 3600
    )


def test_a_rebuild_reads_the_log_from_the_start_of_the_window_or_the_period():
    assert check_for("messages", 5, "user:u", USER, SPANS).start(NOW) == NOW - 86400
    assert check_for("rpm", 5, "user:u", USER, SPANS).start(NOW) == NOW - 60
    assert check_for("daily_tokens", 5, "user:u", USER, SPANS).start(NOW) == NOW - 3600
    assert check_for("monthly_tokens", 5, "user:u", USER, SPANS).start(NOW) == NOW - 3600


def test_a_counters_plan_is_numbers_a_redis_script_takes():
    plan = check_for("daily_budget", 2, "user:u", USER, SPANS).as_plan()
    assert plan == {
        "kind": "counter",
        "unit": "usd",
        "key": "tally/usd/d2026-01-01/user:u",
        "limit": 2_000_000_000,
        "expiry": 0,
        "reset": SPANS["day"][2],
    }
