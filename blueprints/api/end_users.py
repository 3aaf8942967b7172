"""The ``/v1`` API's side of verified end users: the end-user token of a request (checked
against the identity provider when sent, required by --user-token keys) and CORS for the
browser origins of keys (preflights included)."""

from __future__ import annotations

from flask import Response, g, request

from blueprints.api import calls
from blueprints.api.base import runtime
from tally.end_users.claims import EndUserClaim
from tally.keys.api_keys import AuthenticatedKey
from tally.keys.cors import answer_headers, preflight_headers
from tally.verification.idp import allows_origin
from tally.verification.tokens import HEADER


def verified_user(key: AuthenticatedKey) -> EndUserClaim | None:
    """The request's verified end user (blueprints.api.calls.verified_user); the
    answer's CORS headers are then ``key``'s."""
    g.api_key = key
    return calls.verified_user(runtime(), key, request.headers.get(HEADER))


def add_cors(response: Response) -> Response:
    """CORS headers for an allowed Origin: the presented key's origins (or, before a key
    was read — a preflight, a missing key — the origins of any active key)."""
    origin = request.headers.get("Origin")
    if not origin:
        return response
    response.vary.add("Origin")
    key: AuthenticatedKey | None = g.get("api_key")
    preflight = request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
    if key is not None and not preflight:
        allowed = origin in key.origins
    else:
        app_runtime = runtime()
        with app_runtime.sessions() as session:
            allowed = allows_origin(session, origin, app_runtime.cache)
    if not allowed:
        return response
    if preflight:
        requested = request.headers.get("Access-Control-Request-Headers", "")
        response.headers.update(preflight_headers(origin, requested))
        response.status_code = 204
        response.set_data(b"")
    else:
        response.headers.update(answer_headers(origin))
    return response
