"""The application factory: wiring only. ``flask --app app …`` finds ``create_app``."""

from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from blueprints import auth, cli, console, demo, extensions, health
from blueprints.api import admin, v1
from blueprints.api.calls import DirectCalls
from blueprints.api.errors import http_error_response
from blueprints.bodies import BodyDeadline
from blueprints.console.base import database_unavailable, error_page
from tally.access_log import AccessLog
from tally.errors import DatabaseUnavailable
from tally.logs import configure_logging
from tally.runtime.process import build_runtime
from tally.settings import default_instance_path, load_settings

# Served by the lean app: bearer-key JSON (the API, the admin API) and probes, no cookies,
# no console machinery (so no CSRF: nothing there is authenticated by a cookie).
LEAN_PREFIXES = ("/v1/", "/demo/", "/admin/api/")
LEAN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
SETTING_PREFIXES = ("TALLY_", "OTEL_")  # overrides read as the environment would be
# What the console answers with its "database unavailable" page (tally.db.is_unavailable).
DATABASE_UNAVAILABLE = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    DatabaseUnavailable,
)


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Build the app. ``overrides`` may hold TALLY_* settings (as the environment would),
    ``INSTANCE_PATH``, and Flask config keys (tests use this).

    Two Flask apps share one config and one gateway: the console (returned: CLI, login,
    sessions, CSRF, login throttling, security headers) and a lean one for the API, the
    demo upstream and the probes, which none of that machinery concerns. A request's
    path picks the app; the console's extensions then cost the API nothing per request.
    """
    overrides = dict(overrides or {})
    instance_path = overrides.pop("INSTANCE_PATH", None) or default_instance_path()
    app = Flask(__name__, instance_path=instance_path)
    # TALLY_* settings, and OpenTelemetry's OTEL_* variables (tally/traces/), as the
    # environment would give them
    tally_overrides = {k: v for k, v in overrides.items() if k.startswith(SETTING_PREFIXES)}
    if overrides.get("TESTING"):  # tests read usage rows right after each response
        tally_overrides.setdefault("TALLY_USAGE_WRITES", "inline")
    settings = load_settings(app.instance_path, tally_overrides)
    configure_logging(
        settings.log_format,
        [settings.upstream_api_key, settings.hash_key, settings.secret_key, settings.metrics_token],
    )
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        TALLY=settings,
        DEMO_TOKEN_DELAY=0.03,
    )
    app.config.update({k: v for k, v in overrides.items() if not k.startswith(SETTING_PREFIXES)})
    app.extensions["tally"] = build_runtime(
        settings, app.config["DEMO_TOKEN_DELAY"], app.config.get("SINKS_DELIVERY_LOOP", True)
    )

    lean = Flask("tally.api", root_path=app.root_path, instance_path=app.instance_path)
    lean.config, lean.extensions = app.config, app.extensions  # one config, one gateway
    lean.session_interface = extensions.NoSessions()
    lean.register_blueprint(v1.bp)
    lean.register_blueprint(admin.bp)
    lean.register_blueprint(demo.bp)
    lean.register_blueprint(health.bp)
    lean.register_error_handler(HTTPException, http_error_response)

    extensions.init_app(app)
    app.register_blueprint(auth.bp)
    app.register_blueprint(console.blueprint())
    app.register_error_handler(HTTPException, error_page)
    for unavailable in DATABASE_UNAVAILABLE:
        app.register_error_handler(unavailable, database_unavailable)
    cli.register(app)

    console_wsgi = app.wsgi_app
    # the /v1 API's calls are answered without Flask; the rest of /v1 by its blueprint
    lean_wsgi = DirectCalls(lean.wsgi_app, app.extensions["tally"], app.config)

    def dispatch(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith(LEAN_PREFIXES) or path in LEAN_PATHS:
            return lean_wsgi(environ, start_response)
        return console_wsgi(environ, start_response)

    if settings.trusted_proxies:  # client address and scheme from the proxies' headers
        hops = settings.trusted_proxies
        dispatch = ProxyFix(dispatch, x_for=hops, x_proto=hops)
    # a request body must arrive within TALLY_BODY_TIMEOUT, whoever serves it
    app.wsgi_app = AccessLog(BodyDeadline(dispatch, settings.body_timeout))
    return app
