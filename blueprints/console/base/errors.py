"""The one place each kind of error becomes a console answer: a refused use case
(:class:`InvalidInput`) gets its form again with the message (422), a value the database
refuses a 400 page, any HTTP error an error page, an unreachable database a plain 503
page."""

from __future__ import annotations

from flask import Response, current_app, g, make_response, render_template, request
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import DataError
from werkzeug.exceptions import BadRequest, HTTPException

from blueprints.console.base.access import get_db, login_redirect
from blueprints.console.base.pages import form_error
from tally.errors import DatabaseUnavailable, InvalidInput


def domain_error(exc: InvalidInput) -> Response:
    """The one place the console answers a refused use case: nothing of it is kept, and
    the form comes back as typed with the message (422). A view that did not say which
    form it is (:func:`on_domain_error`) answers a plain 400 page."""
    get_db().rollback()
    form_view = g.get("form_view")
    if form_view is None:
        return error_page(BadRequest(str(exc)))
    page, fragment, context = form_view
    extra = {"error_field": exc.field} if exc.field else {}
    return form_error(page, fragment, str(exc), **extra, **context())


def database_refused(_exc: DataError) -> Response:
    """A value the database will not store is the client's mistake, never a 500."""
    return error_page(BadRequest("The database refused a value of this request."))


def error_page(exc: HTTPException) -> Response:
    """Any HTTP error outside the JSON API, as a console page (never a stack trace).
    A stale CSRF token of a logged-out visitor means the session ended: log in again."""
    if (
        isinstance(exc, CSRFError)
        and not current_user.is_authenticated
        and request.endpoint != "auth.login"
    ):
        return login_redirect()
    code = exc.code or 500
    return make_response(render_template("errors/error.html", error=exc, code=code), code)


def database_unavailable(exc: Exception) -> Response:
    """The database cannot be reached: a plain page (it needs no session, no user and
    no database), status 503, logged once per outage by the gateway's outage tracker."""
    error = exc if isinstance(exc, DatabaseUnavailable) else DatabaseUnavailable()
    if not isinstance(exc, DatabaseUnavailable):
        current_app.extensions["tally"].cache.outage.failed(exc)
    # Rendered without the context processors: they ask who is logged in, from the database.
    page = current_app.jinja_env.get_template("errors/unavailable.html").render()
    response = make_response(page, 503)
    response.headers["Retry-After"] = str(error.retry_after)
    return response
