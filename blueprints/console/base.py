"""What the console's views share: login and role checks, the database session of the
request, rendering a full page or its HTMX fragment, the one place each kind of error
becomes a console answer (a refused use case, :class:`InvalidInput`, its form again with
the message, 422; an HTTP error an error page; an unreachable database a plain 503 page),
and the layout's navigation and template filters.

:func:`register` puts the hooks among these on the console blueprint, which
blueprints/console/__init__.py builds; each page module registers its own views.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session
from werkzeug.exceptions import BadRequest, HTTPException

from tally.errors import DatabaseUnavailable, InvalidInput
from tally.runtime.process import Runtime

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# (endpoint, label, admin only)
NAVIGATION = (
    ("console.dashboard", "Dashboard", False),
    ("console.config_page", "Tracking", False),
    ("console.identities_list", "Identities", False),
    ("console.usage_page", "Usage", False),
    ("console.requests_list", "Requests", False),
    ("console.prices_page", "Prices", False),
    ("console.keys_list", "API keys", False),
    ("console.idp_page", "Identity provider", False),
    ("console.limits_page", "Limits", False),
    ("console.sinks_list", "Sinks", False),
    ("console.audit_list", "Audit log", False),
    ("console.operators_list", "Operators", True),
)


# The one placeholder for nothing (no value, no cost, never), on every page.
NOTHING = "–"
# Posts that change nothing (they only read and answer), open to support operators too;
# CSRF is still checked on them like on every post.
READ_ONLY_POSTS = frozenset({"console.idp_test"})


def register(bp: Blueprint) -> None:
    """Every console request needs a login and gets its database session closed; a
    refused use case and a value the database refuses get their console answers; every
    template of the app gets the navigation and the filters."""
    bp.before_request(require_operator)
    bp.teardown_app_request(close_db)
    bp.register_error_handler(InvalidInput, domain_error)
    bp.register_error_handler(DataError, database_refused)
    bp.app_context_processor(console_context)
    bp.add_app_template_filter(money, "money")
    bp.add_app_template_filter(count, "count")
    bp.add_app_template_filter(when, "when")
    bp.add_app_template_filter(shown, "shown")


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


def is_htmx() -> bool:
    """True for an HTMX request that wants a fragment (a history restore wants a page)."""
    return (
        request.headers.get("HX-Request") == "true"
        and request.headers.get("HX-History-Restore-Request") != "true"
    )


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


def render(page: str, fragment: str | None = None, status: int = 200, **context: Any) -> Response:
    """The full ``page``, or only ``fragment`` for an HTMX request; ``Vary: HX-Request``
    so no cache serves one in place of the other."""
    template = fragment if fragment and is_htmx() else page
    response = make_response(render_template(template, **context), status)
    response.vary.add("HX-Request")
    return response


def form_error(page: str, fragment: str | None, message: str, **context: Any) -> Response:
    """The one way the console answers a bad form value: the form again, as typed, with
    ``message``, status 422."""
    return render(page, fragment, 422, error=message, **context)


def on_domain_error(
    page: str, fragment: str | None, context: Callable[[], dict[str, Any]]
) -> Callable:
    """Decorate a view whose use case may refuse (a :class:`InvalidInput`): the refusal is
    answered by :func:`domain_error` with ``page`` (or ``fragment`` for HTMX) and what
    ``context()`` returns, which reads the form as typed from the request."""

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            g.form_view = (page, fragment, context)
            return view(*args, **kwargs)

        return wrapped

    return decorate


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


def back_to(endpoint: str, **values: Any) -> Response:
    """After a change made without HTMX: see the result as a fresh page (303)."""
    return redirect(url_for(endpoint, **values), 303)


def changed(message: str, endpoint: str, panel: Callable[..., Response]) -> Response:
    """After a change: a plain form post is sent to ``endpoint`` with ``message`` flashed
    (post/redirect/get); an HTMX request gets ``panel(message=message)``, the swap."""
    if not is_htmx():
        flash(message)
        return back_to(endpoint)
    return panel(message=message)


def page_number() -> int:
    """The ``page`` query parameter, 1 when missing or not a number."""
    return request.args.get("page", 1, type=int) or 1


def database_refused(_exc: DataError) -> Response:
    """A value the database will not store is the client's mistake, never a 500."""
    return error_page(BadRequest("The database refused a value of this request."))


def console_context() -> dict[str, Any]:
    """Navigation for the layout."""
    admin = current_user.is_authenticated and current_user.is_admin
    return {"navigation": [(e, label) for e, label, only in NAVIGATION if admin or not only]}


def money(value: float | None) -> str:
    """Dollars, the one way the console shows a cost, a budget or a price: cents from
    $1 up (``$1,234.56``), up to four decimals below (``$0.4721``, ``$0.50``), and two
    significant digits under a cent (``$0.000088``): a cost that is not zero never
    reads ``$0.00``. Nothing is ``–``."""
    if value is None:
        return NOTHING
    amount = float(value)
    sign, amount = ("-" if amount < 0 else ""), abs(amount)
    if amount == 0:
        return "$0.00"
    if amount >= 1:
        return f"{sign}${amount:,.2f}"
    if amount >= 0.01:
        decimals = 4
    elif amount < 1e-12:
        return f"{sign}<$0.000000000001"
    else:  # two significant digits
        decimals = 1 - math.floor(math.log10(amount))
    whole, _, fraction = f"{amount:.{decimals}f}".partition(".")
    fraction = fraction.rstrip("0").ljust(2, "0")
    return f"{sign}${whole}.{fraction}"


def count(value: int | float | None) -> str:
    """A whole number with thousands separators."""
    return NOTHING if value is None else f"{int(value):,}"


def when(value: datetime | None) -> str:
    """A stored (naive UTC) time, to the minute."""
    return NOTHING if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


def shown(value: Any) -> str:
    """A stored value as a person reads it: ``–`` for nothing (none, an empty string or
    list), ``yes`` / ``no``, a list's items joined by commas, a mapping as ``k=v``."""
    if value is None or value == "" or value == [] or value == {}:
        return NOTHING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(shown(item) for item in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={shown(v)}" for k, v in value.items())
    return str(value)


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
