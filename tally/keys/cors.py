"""CORS for browser frontends: which origins a key allows, and the headers their
preflights and answers get. Only a key's own origins ever get CORS headers; every other
origin gets none, so the browser keeps its pages from reading Tally's answers.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from tally.errors import InvalidInput

MAX_ORIGINS = 20
MAX_ORIGIN_LENGTH = 255
# What the SDKs send: the OpenAI SDKs' own headers (x-stainless-* are matched by prefix),
# the Vercel AI SDK's, and Tally's. Safelisted headers (Accept, …) need no listing.
ALLOWED_HEADERS = frozenset(
    {
        "authorization",
        "content-type",
        "x-tally-user-token",
        "x-tally-user",
        "openai-organization",
        "openai-project",
        "openai-beta",
        "idempotency-key",
    }
)
ALLOWED_HEADER_PREFIXES = ("x-stainless-",)
EXPOSED_HEADERS = (
    "X-Request-Id, X-Generation-Id, X-RateLimit-Limit, X-RateLimit-Remaining, "
    "X-RateLimit-Reset, Retry-After"
)
ALLOWED_METHODS = "GET, POST, OPTIONS"
PREFLIGHT_MAX_AGE = "600"  # seconds a browser may reuse a preflight answer


class OriginError(InvalidInput):
    """An origin that is not ``scheme://host[:port]``."""

    def __init__(self, message: str):
        super().__init__(message, "origins")


def normalize_origin(raw: str) -> str:
    """``https://App.example.com/`` → ``https://app.example.com``: the form browsers send
    in their Origin header. Paths, queries and credentials are refused."""
    value = raw.strip()
    parts = urlsplit(value)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or len(value) > MAX_ORIGIN_LENGTH
    ):
        raise OriginError(
            f"an origin is scheme://host[:port] (like https://app.example.com), got {raw!r}"
        )
    try:
        port = parts.port
    except ValueError:
        raise OriginError(f"bad port in origin {raw!r}") from None
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def normalize_origins(raws: Iterable[str]) -> tuple[str, ...]:
    """Every origin of ``raws`` normalized, duplicates dropped, order kept."""
    origins: list[str] = []
    for raw in raws:
        if raw.strip():
            origin = normalize_origin(raw)
            if origin not in origins:
                origins.append(origin)
    if len(origins) > MAX_ORIGINS:
        raise OriginError(f"a key may have at most {MAX_ORIGINS} origins")
    return tuple(origins)


def answer_headers(origin: str) -> dict[str, str]:
    """The CORS headers of an answer to an allowed ``origin``."""
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Expose-Headers": EXPOSED_HEADERS,
    }


def preflight_headers(origin: str, requested: str) -> dict[str, str]:
    """A preflight's answer for an allowed ``origin``: the requested headers that Tally
    accepts (any other one is left out, and the browser then refuses the call)."""
    wanted = [h.strip().lower() for h in requested.split(",") if h.strip()]
    allowed = [h for h in wanted if h in ALLOWED_HEADERS or h.startswith(ALLOWED_HEADER_PREFIXES)]
    headers = {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": ALLOWED_METHODS,
        "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
    }
    if allowed:
        headers["Access-Control-Allow-Headers"] = ", ".join(allowed)
    return headers
