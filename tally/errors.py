"""Errors: one tree. Everything Tally's domain refuses or cannot do is a
:class:`TallyError` that says what went wrong (a field and its limit, a limit used up, the
upstream failing), never which HTTP status to send. Each surface maps them in one place:
the API into OpenAI's error shape (tally.proxy.openai_errors, used by blueprints/api), the
console into a form message (blueprints/console/base/errors.py), the CLI into one line and exit
status 2 (blueprints/cli/common.py)."""

from __future__ import annotations


class TallyError(Exception):
    """Base of every error Tally reports to a person or a program. ``field`` names the
    input at fault, if one is; ``code`` is a stable machine-readable name;
    ``retry_after`` (seconds) says when asking again may succeed; ``headers`` carries the
    end user's X-RateLimit-* state, which every API answer shows, refusals included."""

    default_code: str | None = None

    def __init__(
        self,
        message: str,
        field: str | None = None,
        *,
        code: str | None = None,
        retry_after: int | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code or self.default_code
        self.retry_after = retry_after
        self.headers = headers or {}


class InvalidInput(TallyError):
    """A request, form or command whose body, field or value is not acceptable: bad JSON,
    a duplicate key name, a bad config value, an unknown revision. The message names the
    field and the limit."""


class BodyTooLarge(InvalidInput):
    """The request body is larger than TALLY_MAX_BODY_BYTES."""

    default_code = "request_too_large"


class AuthenticationFailed(TallyError):
    """No Tally key, an unknown key, or a revoked key."""

    default_code = "invalid_api_key"


class RateLimited(TallyError):
    """A message quota or rate limit is used up (``retry_after``: when it frees up)."""

    default_code = "rate_limit_exceeded"


class BudgetExceeded(RateLimited):
    """A token limit or budget for the day or month is used up."""

    default_code = "budget_exceeded"


class Unavailable(TallyError):
    """A store the request needs cannot be reached, and what the request needs is not
    known well enough without it; asking again after ``retry_after`` may succeed."""

    RETRY_AFTER: int | None = None  # seconds, when the outage's usual length is known

    def __init__(self, message: str, field: str | None = None, **kw):
        kw.setdefault("retry_after", self.RETRY_AFTER)
        super().__init__(message, field, **kw)


class DatabaseUnavailable(Unavailable):
    """The database is unavailable."""

    default_code = "database_unavailable"
    RETRY_AFTER = 5  # seconds: a failover or a restart usually takes a few

    def __init__(self, message: str = "The database is unavailable; retry shortly.", **kw):
        super().__init__(message, **kw)


class LimitsUnavailable(Unavailable):
    """The limit storage cannot be reached and TALLY_RATELIMIT_FAIL is ``closed``."""

    default_code = "limits_unavailable"


class UpstreamError(TallyError):
    """The upstream could not be reached, answered with something that is not an answer,
    or answered with an error of its own: then ``upstream_status`` is its HTTP status and
    ``upstream_type`` its error type, both passed on to the client as they were."""

    default_code = "upstream_unreachable"

    def __init__(
        self,
        message: str,
        field: str | None = None,
        *,
        upstream_status: int | None = None,
        upstream_type: str | None = None,
        **kw,
    ):
        super().__init__(message, field, **kw)
        self.upstream_status = upstream_status
        self.upstream_type = upstream_type


class UpstreamTimeout(UpstreamError):
    """The upstream sent nothing for TALLY_UPSTREAM_TIMEOUT seconds."""

    default_code = "upstream_timeout"
