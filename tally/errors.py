"""Errors. :class:`DomainError`: what the console and the CLI report to a person, in one
place each. :class:`TallyError`: what the API reports, with what OpenAI's error shape
needs; the API blueprint turns them into ``{"error": {...}}`` responses in one place."""

from __future__ import annotations


class DomainError(ValueError):
    """A use case that cannot be done as asked: a duplicate key name, a bad config value,
    an unknown revision. The message is for the person who asked (the console shows it
    on the form, the CLI prints it); ``field`` names the form field at fault, if one is."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class TallyError(Exception):
    """Base of every error Tally reports to an API client."""

    status = 500
    type = "api_error"
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code
        if status is not None:
            self.status = status
        self.headers = headers or {}

    def to_dict(self) -> dict:
        """OpenAI's error object."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(TallyError):
    """400: the JSON or one of its fields is not acceptable."""

    status = 400
    type = "invalid_request_error"


class AuthenticationFailed(TallyError):
    """401: no Tally key, an unknown key, or a revoked key."""

    status = 401
    type = "invalid_request_error"
    default_code = "invalid_api_key"


class BodyTooLarge(TallyError):
    """413: the request body is larger than TALLY_MAX_BODY_BYTES."""

    status = 413
    type = "invalid_request_error"
    default_code = "request_too_large"


class UpstreamError(TallyError):
    """The upstream answered with an error, could not be reached, or timed out."""

    status = 502
    type = "upstream_error"
    default_code = "upstream_unreachable"


class UpstreamTimeout(UpstreamError):
    """504: the upstream sent nothing for TALLY_UPSTREAM_TIMEOUT seconds."""

    status = 504
    default_code = "upstream_timeout"


class RateLimited(TallyError):
    """429: a message quota or rate limit is used up (``Retry-After`` in headers)."""

    status = 429
    type = "requests"
    default_code = "rate_limit_exceeded"


class BudgetExceeded(RateLimited):
    """429: a token limit or budget for the day or month is used up."""

    type = "insufficient_quota"
    default_code = "budget_exceeded"


class LimitsUnavailable(TallyError):
    """503: the limit storage cannot be reached and TALLY_RATELIMIT_FAIL is ``closed``."""

    status = 503
    type = "api_error"
    default_code = "limits_unavailable"


class ServiceUnavailable(TallyError):
    """503: the database (or another store) is unavailable and what the request needs
    is not known well enough without it; the client should retry after ``Retry-After``."""

    status = 503
    type = "api_error"
    default_code = "database_unavailable"
    RETRY_AFTER = 5  # seconds: a failover or a restart usually takes a few

    def __init__(self, message: str = "The database is unavailable; retry shortly.", **kw):
        kw.setdefault("headers", {"Retry-After": str(self.RETRY_AFTER)})
        super().__init__(message, **kw)
