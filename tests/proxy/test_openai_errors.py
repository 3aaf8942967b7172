"""Tally's errors as the API answers them (tally.proxy.openai_errors): the status, OpenAI's
error object and the headers, for every kind of error the domain raises."""

from __future__ import annotations

import pytest

from tally.errors import (
    AuthenticationFailed,
    BodyTooLarge,
    BudgetExceeded,
    DatabaseUnavailable,
    InvalidInput,
    LimitsUnavailable,
    RateLimited,
    TallyError,
    UpstreamError,
    UpstreamTimeout,
)
from tally.proxy.openai_errors import error_headers, error_object, status_of
from tally.verification.tokens import IdpUnavailable, TokenError


@pytest.mark.parametrize(
    ("error", "status", "kind", "code"),
    [
        (InvalidInput("model is required.", "model"), 400, "invalid_request_error", None),
        (BodyTooLarge("too big"), 413, "invalid_request_error", "request_too_large"),
        (AuthenticationFailed("no key"), 401, "invalid_request_error", "invalid_api_key"),
        (TokenError("token_expired", "expired"), 401, "invalid_request_error", "token_expired"),
        (RateLimited("used up", retry_after=3), 429, "requests", "rate_limit_exceeded"),
        (BudgetExceeded("spent", retry_after=3), 429, "insufficient_quota", "budget_exceeded"),
        (DatabaseUnavailable(), 503, "api_error", "database_unavailable"),
        (LimitsUnavailable("down"), 503, "api_error", "limits_unavailable"),
        (IdpUnavailable("no keys"), 503, "api_error", "idp_unavailable"),
        (UpstreamError("unreachable"), 502, "upstream_error", "upstream_unreachable"),
        (UpstreamTimeout("slow"), 504, "upstream_error", "upstream_timeout"),
        (TallyError("Internal error."), 500, "api_error", None),
    ],
)
def test_each_error_has_its_status_type_and_code(error, status, kind, code):
    assert status_of(error) == status
    body = error_object(error)["error"]
    assert (body["type"], body["code"], body["message"]) == (kind, code, error.message)


def test_the_field_at_fault_is_openais_param():
    assert error_object(InvalidInput("bad", "messages[0]"))["error"]["param"] == "messages[0]"


def test_an_upstreams_own_error_keeps_its_status_and_type():
    error = UpstreamError("No such model", upstream_status=404, upstream_type="not_found")
    assert status_of(error) == 404
    assert error_object(error)["error"]["type"] == "not_found"


def test_headers_carry_retry_after_the_limit_state_and_the_challenge():
    refused = RateLimited("used up", retry_after=7, headers={"X-RateLimit-Remaining": "0"})
    assert error_headers(refused) == {"X-RateLimit-Remaining": "0", "Retry-After": "7"}
    assert error_headers(DatabaseUnavailable()) == {"Retry-After": "5"}
    assert error_headers(LimitsUnavailable("down")) == {}
    assert error_headers(AuthenticationFailed("no key")) == {
        "WWW-Authenticate": 'Bearer realm="tally"'
    }
