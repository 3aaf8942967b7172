"""The application factory: wiring only. ``flask --app app …`` finds ``create_app``."""

from __future__ import annotations

from typing import Any

from flask import Flask, request
from werkzeug.exceptions import HTTPException

from tally.cache import install_cache
from tally.gateway import build_gateway
from tally.logs import configure_logging, install_access_log
from tally.services.writer import install_writer
from tally.settings import load_settings


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Build the app. ``overrides`` may hold TALLY_* settings (as the environment would),
    ``INSTANCE_PATH``, and Flask config keys (tests use this)."""
    overrides = dict(overrides or {})
    app = Flask(__name__, instance_path=overrides.pop("INSTANCE_PATH", None))
    tally_overrides = {k: v for k, v in overrides.items() if k.startswith("TALLY_")}
    if overrides.get("TESTING"):  # tests read usage rows right after each response
        tally_overrides.setdefault("TALLY_USAGE_WRITES", "inline")
    settings = load_settings(app.instance_path, tally_overrides)
    configure_logging(settings.log_format, [settings.upstream_api_key, settings.hash_key])
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        TALLY=settings,
        DEMO_TOKEN_DELAY=0.03,
    )
    app.config.update({k: v for k, v in overrides.items() if not k.startswith("TALLY_")})
    gateway = app.extensions["tally"] = build_gateway(settings, app.config["DEMO_TOKEN_DELAY"])
    install_cache(gateway)
    if settings.usage_writes == "background":
        install_writer(gateway.sessions, settings.database_url)

    from blueprints import api, auth, cli, console, console_base, demo, extensions, health

    app.register_blueprint(api.bp)
    app.register_blueprint(demo.bp)
    app.register_blueprint(health.bp)
    extensions.init_app(app)
    extensions.csrf.exempt(api.bp)  # bearer keys, not cookies: no CSRF to check
    extensions.csrf.exempt(demo.bp)
    extensions.limiter.exempt(api.bp)  # login throttling only; the API's hot path skips it
    extensions.limiter.exempt(demo.bp)
    extensions.limiter.exempt(health.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(console.bp)
    install_access_log(app)
    cli.register(app)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if request.path.startswith("/v1/"):
            return api.http_error_response(exc)
        return console_base.error_page(exc)

    return app
