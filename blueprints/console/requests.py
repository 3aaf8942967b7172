"""Console: the request log — every call Tally answered or refused, newest first, with
filters that combine (end user, key, model, endpoint, status, UTC dates) and a cursor to
page back through millions of rows — and one call with everything Tally knows about it."""

from __future__ import annotations

from flask import Blueprint, abort, request

from blueprints.console.base import actor, get_db, is_htmx, on_domain_error, render
from tally.keys.api_keys import list_api_keys
from tally.reports.requests import (
    ENDPOINTS,
    STATUSES,
    RequestFilter,
    parse_filter,
    request_detail,
    request_log,
)

PAGE, LOG = "requests/page.html", "requests/_log.html"
FIELDS = ("user", "key", "model", "endpoint", "status", "from", "to")


def register(bp: Blueprint) -> None:
    """The request log's routes on the console blueprint ``bp``."""
    bp.get("/requests")(requests_list)
    bp.get("/requests/<request_id>")(requests_show)


def _choices() -> dict:
    """The form's lists: every key (revoked ones too: their calls are in the log)."""
    keys = [key.name for key in list_api_keys(get_db())]
    return {"keys": keys, "endpoints": tuple(ENDPOINTS), "statuses": STATUSES}


def _form_again() -> dict:
    """The page after a bad filter: the form as typed, no rows."""
    form = {name: request.args.get(name, "") for name in FIELDS}
    return {"form": form, "log": None, **_choices()}


@on_domain_error(PAGE, LOG, _form_again)
def requests_list():
    """Calls newest first, 50 a page, narrowed by the query's filters, older than its
    ``before`` cursor. A filter by end user is a trace, and audited as one."""
    query = parse_filter(request.args)
    log = request_log(get_db(), query, actor())
    response = render(PAGE, LOG, log=log, form=_form_of(query), **_choices())
    if is_htmx():  # the address bar shows the filters set, not the form's every field
        cursor = {"before": request.args["before"]} if query.before else {}
        response.headers["HX-Push-Url"] = request.path + query.query_string(**cursor)
    return response


def _form_of(query: RequestFilter) -> dict:
    """The form's values for ``query`` (every field, ``""`` when not filtered)."""
    params = query.params()
    return {name: params.get(name, "") for name in FIELDS}


def requests_show(request_id: str):
    """One call, found by its ``X-Request-Id``."""
    row = request_detail(get_db(), request_id)
    if row is None:
        abort(404, "No call has this request id.")
    return render("requests/detail.html", row=row)
