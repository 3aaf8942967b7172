"""How a console view answers: the full page or its HTMX fragment, a form again with its
message (422), a form's refused use case (:func:`on_domain_error`), the way back after a
change, the page number of a list, and the layout's navigation."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import Response, flash, g, make_response, redirect, render_template, request, url_for
from flask_login import current_user

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


def console_context() -> dict[str, Any]:
    """Navigation for the layout."""
    admin = current_user.is_authenticated and current_user.is_admin
    return {"navigation": [(e, label) for e, label, only in NAVIGATION if admin or not only]}


def is_htmx() -> bool:
    """True for an HTMX request that wants a fragment (a history restore wants a page)."""
    return (
        request.headers.get("HX-Request") == "true"
        and request.headers.get("HX-History-Restore-Request") != "true"
    )


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
