"""Flask extensions of the console, created unbound and bound to an app by :func:`init_app`.

- ``login_manager``: operator sessions (flask-login);
- ``csrf``: CSRF checks on every state-changing request (Flask-WTF);
- ``limiter``: the storage and strategy of login throttling (flask-limiter; the lockouts
  themselves are tally/operators/throttle.py's), on the same storage as the API's limits
  (tally/limits/admission.py): ``TALLY_RATELIMIT_STORAGE_URI``, else the instance's
  counter file under gunicorn, else this process's memory (then it is the instance).
"""

from __future__ import annotations

from datetime import timedelta

from flask import Flask, Response, request
from flask.sessions import SecureCookieSessionInterface
from flask.sessions import SessionInterface as BaseSessionInterface
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect

import tally.limits.storage.lmdb_file  # noqa: F401  (registers tally+lmdb://)
import tally.limits.storage.registry  # noqa: F401  (registers tally+memory://)

login_manager = LoginManager()
csrf = CSRFProtect()
limiter = Limiter(key_func=get_remote_address, headers_enabled=False)

# Only the app's own scripts and styles; no inline code, no framing, no plugins.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the Secure flag set whenever the request came
    over HTTPS (behind a proxy, once ProxyFix trusts its X-Forwarded-Proto)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        """Secure when configured so, or when this request is HTTPS."""
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure


class NoSessions(BaseSessionInterface):
    """For the lean app (the API, the demo upstream, the probes): the console's session
    cookie is neither read nor refreshed there, so an API call never sets a cookie."""

    def open_session(self, app: Flask, request):
        """A null session: reading it is empty, writing to it is an error."""
        return self.make_null_session(app)

    def save_session(self, app: Flask, session, response: Response) -> None:
        """Nothing to save."""


def login_storage_uri(settings) -> str:
    """The limits storage URI the API's limits use, for flask-limiter."""
    if settings.ratelimit_storage_uri:
        return settings.ratelimit_storage_uri
    if settings.limits_db:
        return f"tally+lmdb://{settings.limits_db}"
    return "tally+memory://"


def init_app(app: Flask) -> None:
    """Bind the extensions and the console's cookie and header policy to ``app``."""
    settings = app.config["TALLY"]
    app.config.setdefault("RATELIMIT_STORAGE_URI", login_storage_uri(settings))
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", False)
    app.config.setdefault("LOGIN_LIMIT_PER_ACCOUNT", "5 per minute; 20 per hour")
    app.config.setdefault("LOGIN_LIMIT_PER_IP", "20 per minute; 100 per hour")
    # a browser that signed in before, per its device cookie (tally/operators/throttle.py)
    app.config.setdefault("LOGIN_LIMIT_PER_DEVICE", "5 per minute; 20 per hour")
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # valid as long as the session
    # Flask's own defaults are looser: no SameSite, 31-day sessions.
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = app.config["SESSION_COOKIE_SAMESITE"] or "Lax"
    if (
        app.config["PERMANENT_SESSION_LIFETIME"]
        == Flask.default_config["PERMANENT_SESSION_LIFETIME"]
    ):
        app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=12)
    app.session_interface = SessionInterface()

    login_manager.init_app(app)
    csrf.init_app(app)
    limiter.init_app(app)
    app.after_request(add_security_headers)


def add_security_headers(response: Response) -> Response:
    """CSP and friends on every console answer (the JSON API is another app: app.py)."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if not request.path.startswith("/static/"):
        # Console pages hold personal data and one-time secrets: never cached.
        response.headers.setdefault("Cache-Control", "no-store")
    return response
