"""What the console's views share, by kind:

- ``access``: login and role checks, the operator the audit log names, the app's
  runtime and the request's database session;
- ``pages``: rendering a full page or its HTMX fragment, forms again with their message,
  the way back after a change, the layout's navigation;
- ``errors``: the one place each kind of error becomes a console answer (a refused use
  case, :class:`InvalidInput`, its form again with the message, 422; an HTTP error an
  error page; an unreachable database a plain 503 page);
- ``words``: the template filters.

Views import what they use from here. :func:`register` puts the hooks among these on the
console blueprint, which blueprints/console/__init__.py builds; each page module
registers its own views.
"""

from __future__ import annotations

from flask import Blueprint
from sqlalchemy.exc import DataError

from blueprints.console.base.access import (
    READ_ONLY_POSTS,
    SAFE_METHODS,
    actor,
    close_db,
    get_db,
    login_redirect,
    refuse_nul_characters,
    require_admin,
    require_operator,
    runtime,
)
from blueprints.console.base.errors import (
    database_refused,
    database_unavailable,
    domain_error,
    error_page,
)
from blueprints.console.base.pages import (
    NAVIGATION,
    back_to,
    changed,
    console_context,
    form_error,
    is_htmx,
    on_domain_error,
    page_number,
    render,
)
from blueprints.console.base.words import NOTHING, count, money, shown, when
from tally.errors import InvalidInput

__all__ = [
    "NAVIGATION",
    "NOTHING",
    "READ_ONLY_POSTS",
    "SAFE_METHODS",
    "actor",
    "back_to",
    "changed",
    "count",
    "database_refused",
    "database_unavailable",
    "domain_error",
    "error_page",
    "form_error",
    "get_db",
    "is_htmx",
    "login_redirect",
    "money",
    "on_domain_error",
    "page_number",
    "refuse_nul_characters",
    "register",
    "render",
    "require_admin",
    "require_operator",
    "runtime",
    "shown",
    "when",
]


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
