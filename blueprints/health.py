"""Probes for load balancers and orchestrators: ``/healthz`` (alive) and ``/readyz``
(the database and the rate-limit storage answer). No auth, no secrets in the answer."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from tally.health import check_database, check_limiter_storage

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """The process serves requests."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """200 when the database and the limiter storage answer, else 503 naming the failure."""
    gateway = current_app.extensions["tally"]
    checks = {
        "database": check_database(gateway.engine),
        "limiter_storage": check_limiter_storage(
            gateway.settings.ratelimit_storage_uri, gateway.settings.limits_socket
        ),
    }
    ready = all(result == "ok" for result in checks.values())
    response = jsonify(status="ready" if ready else "unavailable", checks=checks)
    response.status_code = 200 if ready else 503
    response.headers["Cache-Control"] = "no-store"
    return response
