"""Console: the identity directory — search (live, paginated) and one end user's page.
Every search and every profile view is written to the audit log. (Erasing a user:
blueprints/console_erasure.py.)"""

from __future__ import annotations

from flask import abort, request

from blueprints.console_base import (
    actor,
    bp,
    form_error,
    get_db,
    page_number,
    render,
    runtime,
)
from tally.db import utcnow
from tally.end_users.search import search_identities
from tally.limits.status import user_limits
from tally.privacy.erasure import is_erased
from tally.reports.dashboard import ReportError, parse_range
from tally.reports.identity import identity_detail
from tally.reports.performance import user_performance

DETAIL = "identities/detail.html"


@bp.get("/identities")
def identities_list():
    """Search end users by upstream identifier, internal id, e-mail or display name."""
    results = search_identities(get_db(), request.args.get("q", ""), page_number(), actor())
    return render("identities/page.html", "identities/_results.html", results=results)


def detail_context(user_id: int, viewer: str | None) -> dict:
    """What the detail page shows but the performance figures (a view by ``viewer`` is
    audited)."""
    detail = identity_detail(get_db(), user_id, utcnow(), viewer)
    if detail is None:
        abort(404, "No such end user.")
    user = detail.user
    limits = user_limits(runtime().limits, user.external_id, user.profile_metadata, user.id)
    form = {k: request.args.get(k, "") for k in ("start", "end")}
    return {"detail": detail, "limits": limits, "performance": None, "form": form}


@bp.get("/identities/<int:user_id>")
def identity_show(user_id: int):
    """One end user: profile, every identifier they have had, usage, recent requests,
    their quota left and spend against budget, and their latency and time-to-first-token
    percentiles and prompt-cache hit share over ``start``..``end`` (the last 30 days)."""
    context = detail_context(user_id, actor())
    args = request.args
    try:
        start, end = parse_range(args.get("start"), args.get("end"), utcnow().date())
    except ReportError as exc:  # the page as it is, with the range as typed and why not
        return form_error(DETAIL, None, str(exc), **context)
    context["performance"] = user_performance(get_db(), user_id, start, end)
    context["form"] = {"start": start.isoformat(), "end": end.isoformat()}
    return render(DETAIL, **context)


@bp.app_template_test("erased")
def erased_test(external_id: str) -> bool:
    """``{% if user.external_id is erased %}``: the placeholder an erasure left."""
    return is_erased(external_id)
