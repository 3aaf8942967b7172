"""Who may use the console, and what a console request holds: the login and role checks
(a logged-out visitor is sent to log in, as a page even from HTMX), the operator the
audit log names, the app's runtime and the request's database session. The login page
(blueprints/auth.py) uses these too."""

from __future__ import annotations

from urllib.parse import urlencode

from flask import Response, abort, current_app, g, make_response, redirect, request, url_for
from flask_login import current_user
from sqlalchemy.orm import Session

from tally.runtime.process import Runtime

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

# Posts that change nothing (they only read and answer), open to support operators too;
# CSRF is still checked on them like on every post.
READ_ONLY_POSTS = frozenset({"console.idp_test"})


def runtime() -> Runtime:
    """The app's runtime (engine, sessions, settings)."""
    return current_app.extensions["tally"]


def get_db() -> Session:
    """The request's database session, opened on first use and closed on teardown."""
    if "console_db" not in g:
        g.console_db = runtime().sessions()
    return g.console_db


def close_db(_exc: BaseException | None) -> None:
    """Close the request's session; a failed request's open transaction is rolled back."""
    session = g.pop("console_db", None)
    if session is not None:
        session.close()


def actor() -> str:
    """The name the audit log records for the logged-in operator."""
    return current_user.email


def login_redirect() -> Response:
    """Send a logged-out visitor to the login page; HTMX is told to load it as a page,
    so the login form never lands inside a fragment."""
    next_url = request.full_path if request.method == "GET" else request.path
    target = url_for("auth.login") + "?" + urlencode({"next": next_url.rstrip("?")})
    if request.headers.get("HX-Request") == "true":
        response = make_response("", 401)
        response.headers["HX-Redirect"] = target
        return response
    return redirect(target)


def refuse_nul_characters() -> None:
    """No text field may hold a NUL character: PostgreSQL cannot store one, and no person
    types one. Refused as a bad request before anything reaches the database."""
    for source in (request.args, request.form):
        for _name, values in source.lists():
            if any("\x00" in value for value in values):
                abort(400, "Text fields may not contain NUL characters.")


def require_operator():
    """Every console page needs a login; only admins change anything (a post that only
    reads, :data:`READ_ONLY_POSTS`, is open to support)."""
    if not current_user.is_authenticated:
        return login_redirect()
    refuse_nul_characters()
    if (
        request.method not in SAFE_METHODS
        and not current_user.is_admin
        and request.endpoint not in READ_ONLY_POSTS
    ):
        abort(403, "Your role (support) can look, not change.")
    return None


def require_admin() -> None:
    """Refuse a support operator (403) on an admin-only page."""
    if not current_user.is_admin:
        abort(403, "Only admins can see this page.")
