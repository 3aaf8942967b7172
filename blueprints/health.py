"""Probes for load balancers and orchestrators: ``/healthz`` (alive) and ``/readyz``
(the database and the rate-limit storage answer). No auth, no secrets in the answer.
And ``/metrics`` for Prometheus (tally.metrics): open, or behind TALLY_METRICS_TOKEN."""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy.exc import SQLAlchemyError

from blueprints.api.errors import error_response
from tally import metrics
from tally.errors import AuthenticationFailed
from tally.runtime.health import check_database, check_limiter_storage
from tally.sinks.admin import backlog_figures

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """The process serves requests."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """200 "ready" when the database and the limiter storage answer; 200 "degraded" when
    only the database does not, but this process still serves what it knows (keys and
    config loaded within TALLY_MAX_STALENESS): taking it out of a load balancer then
    would turn a database blip into an outage. Else 503 "unavailable"."""
    runtime = current_app.extensions["tally"]
    checks = {
        "database": check_database(runtime.engine),
        "limiter_storage": check_limiter_storage(
            runtime.settings.ratelimit_storage_uri, runtime.settings.limits_db
        ),
    }
    ready = all(result == "ok" for result in checks.values())
    status = "ready" if ready else _degraded_or_unavailable(runtime, checks)
    response = jsonify(status=status, checks=checks)
    response.status_code = 503 if status == "unavailable" else 200
    response.headers["Cache-Control"] = "no-store"
    return response


def _degraded_or_unavailable(runtime, checks: dict[str, str]) -> str:
    only_database = checks["limiter_storage"] == "ok"
    return "degraded" if only_database and runtime.cache.serving() else "unavailable"


@bp.get("/metrics")
def metrics_text():
    """Prometheus text exposition: every worker's counters under gunicorn. No label names
    a user. With TALLY_METRICS_TOKEN set, only for ``Authorization: Bearer <token>``."""
    settings = current_app.extensions["tally"].settings
    if settings.metrics_token and not _bearer_matches(settings.metrics_token):
        return error_response(AuthenticationFailed("A valid metrics token is required."))
    body, content_type = metrics.exposition(settings.metrics_dir, _sink_figures())
    return Response(body, 200, {"Content-Type": content_type, "Cache-Control": "no-store"})


def _sink_figures() -> list | None:
    """The sinks' backlogs, read now; None (left out) when the database cannot say."""
    try:
        with current_app.extensions["tally"].sessions() as session:
            return backlog_figures(session)
    except SQLAlchemyError:
        return None


def _bearer_matches(token: str) -> bool:
    """The request's Bearer token is ``token`` (compared in constant time)."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())
