"""The admin API (JSON only, for BI tools and scripts): ``GET /admin/api/usage``.

Bearer admin API tokens (made on the console, tally.keys.admin_tokens); a gateway
API key, a revoked or an unknown token is 401. Served by the lean app (no cookies, so
no CSRF); every error is OpenAI's shape, as on ``/v1`` (blueprints/api/errors.py).
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Any

from flask import Blueprint, Response, request, url_for

from blueprints.api.base import assign_request_id, bearer_token, forget_request_id, runtime
from blueprints.api.errors import register as serve_errors
from tally.db import utcnow
from tally.errors import AuthenticationFailed
from tally.keys.admin_tokens import AuthenticatedToken, authenticate_admin_token
from tally.keys.api_keys import KEY_PREFIX
from tally.reports.admin_usage import parse_usage_query, usage_page

bp = Blueprint("admin_api", __name__, url_prefix="/admin/api")
bp.before_request(assign_request_id)
bp.teardown_request(forget_request_id)
serve_errors(bp)


@bp.get("/usage")
def usage():
    """Usage over ``from``..``to`` grouped by ``group_by``, one page of ``limit`` rows
    after the cursor ``after``: ``{"rows": [...], "next": URL}`` (``next`` only when
    more rows follow)."""
    _require_admin_token()
    query = parse_usage_query(request.args, utcnow().date())
    with runtime().sessions() as session:
        page = usage_page(session, query)
    body: dict[str, Any] = {"rows": page.rows}
    if page.next_after is not None:
        body["next"] = url_for(".usage", _external=True, **query.params(page.next_after))
    return Response(
        json.dumps(body, default=_plain),
        200,
        mimetype="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _require_admin_token() -> AuthenticatedToken:
    raw = bearer_token()
    if not raw:
        raise AuthenticationFailed(
            "Missing admin API token: send it as 'Authorization: Bearer <admin API token>'."
        )
    if raw.startswith(KEY_PREFIX):
        raise AuthenticationFailed(
            "This is a gateway API key; the admin API needs an admin API token "
            "(made by an admin on the console's API keys page)."
        )
    with runtime().sessions() as session:
        token = authenticate_admin_token(session, raw, utcnow())
    if token is None:
        raise AuthenticationFailed("Incorrect or revoked admin API token.")
    return token


def _plain(value: Any) -> Any:
    """What json cannot write by itself: days as YYYY-MM-DD, exact sums as numbers."""
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
