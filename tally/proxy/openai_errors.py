"""Tally's errors (tally.errors) as the OpenAI-compatible API reports them: the HTTP
status, OpenAI's error object ``{"error": {"message", "type", "param", "code"}}`` and the
headers that go with them. The one place that knows; the API's views, the admin API, the
probes and a stream's error event all ask it, and so do request rows for their status."""

from __future__ import annotations

from typing import Any

from tally.errors import (
    AuthenticationFailed,
    BodyTooLarge,
    BudgetExceeded,
    InvalidInput,
    RateLimited,
    TallyError,
    Unavailable,
    UpstreamError,
    UpstreamTimeout,
)

# (status, OpenAI's error type), most specific class first
STATUS_AND_TYPE: tuple[tuple[type[TallyError], int, str], ...] = (
    (BodyTooLarge, 413, "invalid_request_error"),
    (InvalidInput, 400, "invalid_request_error"),
    (AuthenticationFailed, 401, "invalid_request_error"),
    (BudgetExceeded, 429, "insufficient_quota"),
    (RateLimited, 429, "requests"),
    (Unavailable, 503, "api_error"),
    (UpstreamTimeout, 504, "upstream_error"),
    (UpstreamError, 502, "upstream_error"),
)


def status_of(error: TallyError) -> int:
    """The HTTP status ``error`` is answered with (an upstream's own error keeps its)."""
    if isinstance(error, UpstreamError) and error.upstream_status is not None:
        return error.upstream_status
    return _row(error)[0]


def type_of(error: TallyError) -> str:
    """OpenAI's error ``type`` for ``error`` (an upstream's own error keeps its)."""
    if isinstance(error, UpstreamError) and error.upstream_type is not None:
        return error.upstream_type
    return _row(error)[1]


def error_object(error: TallyError) -> dict[str, Any]:
    """OpenAI's error object."""
    return {
        "error": {
            "message": error.message,
            "type": type_of(error),
            "param": error.field,
            "code": error.code,
        }
    }


def error_headers(error: TallyError) -> dict[str, str]:
    """The headers an answer of ``error`` carries: the end user's X-RateLimit-* state,
    ``Retry-After`` when asking again later may succeed, the auth challenge on a 401."""
    headers = dict(error.headers)
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    if isinstance(error, AuthenticationFailed):
        headers["WWW-Authenticate"] = 'Bearer realm="tally"'
    return headers


def _row(error: TallyError) -> tuple[int, str]:
    for kind, status, name in STATUS_AND_TYPE:
        if isinstance(error, kind):
            return status, name
    return 500, "api_error"
