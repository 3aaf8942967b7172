"""Console: the identity directory — search (live, paginated) and one end user's page —
and erasing an end user from that page (admins, the internal id typed as confirmation;
tally.privacy.erasure). Every search and every profile view is written to the audit log."""

from __future__ import annotations

from flask import Blueprint, abort, flash, make_response, request, url_for

from blueprints.console.base import (
    actor,
    back_to,
    form_error,
    get_db,
    is_htmx,
    on_domain_error,
    page_number,
    render,
    runtime,
)
from tally.db import utcnow
from tally.end_users.search import search_identities
from tally.limits.status import user_limits
from tally.privacy.erasure import Erased, erase_user_by_id, is_erased
from tally.reports.dashboard import ReportError
from tally.reports.identity import identity_detail
from tally.reports.performance import user_performance
from tally.reports.usage_report import parse_range
from tally.reports.users import SORTS, users_table

DETAIL, ERASE = "identities/detail.html", "identities/_erase.html"


def register(bp: Blueprint) -> None:
    """The identity directory's routes (erasing included) and its ``erased`` test on the
    console blueprint ``bp``."""
    bp.get("/identities")(identities_list)
    bp.get("/identities/<int:user_id>")(identity_show)
    bp.post("/identities/<int:user_id>/erase")(identity_erase)
    bp.add_app_template_test(erased_test, "erased")


def identities_list():
    """Search end users by upstream identifier, internal id, e-mail or display name;
    without a query, the users table (last 30 days' figures, tier, limit state) sorted
    by ``sort``."""
    query = request.args.get("q", "").strip()
    results = table = None
    if query:
        results = search_identities(get_db(), query, page_number(), actor())
    else:
        sort = request.args.get("sort", "")
        table = users_table(get_db(), runtime().limits, utcnow(), sort, page_number())
    return render(
        "identities/page.html",
        "identities/_results.html",
        results=results,
        table=table,
        sorts=SORTS,
    )


def detail_context(user_id: int, viewer: str | None, start=None, end=None) -> dict:
    """What the detail page shows but the performance figures, its usage over
    ``start``..``end`` (the last 30 days by default; a view by ``viewer`` is audited)."""
    detail = identity_detail(get_db(), user_id, utcnow(), viewer, start, end)
    if detail is None:
        abort(404, "No such end user.")
    user = detail.user
    limits = user_limits(runtime().limits, user.external_id, user.profile_metadata, user.id)
    form = {k: request.args.get(k, "") for k in ("start", "end")}
    return {"detail": detail, "limits": limits, "performance": None, "form": form}


def identity_show(user_id: int):
    """One end user: profile, every identifier they have had, recent requests, their
    quota left and spend against budget, and over ``start``..``end`` (the last 30 days)
    their usage per model, refused calls, latency and time-to-first-token percentiles
    and prompt-cache hit share."""
    args = request.args
    try:
        start, end = parse_range(args.get("start"), args.get("end"), utcnow().date())
    except ReportError as exc:  # the page of the last 30 days, the range as typed and why
        return form_error(DETAIL, None, str(exc), **detail_context(user_id, actor()))
    context = detail_context(user_id, actor(), start, end)
    context["performance"] = user_performance(get_db(), user_id, start, end)
    context["form"] = {"start": start.isoformat(), "end": end.isoformat()}
    return render(DETAIL, **context)


def erased_test(external_id: str) -> bool:
    """``{% if user.external_id is erased %}``: the placeholder an erasure left."""
    return is_erased(external_id)


def _renamed(erased: Erased) -> str:
    """`` and renamed erased-key-3, …`` when keys bound to the user were renamed."""
    return f" and renamed {', '.join(erased.renamed_keys)}" if erased.renamed_keys else ""


def _erase_again() -> dict:
    """The page again after a refused erasure, with what was typed (not re-audited)."""
    context = detail_context(request.view_args["user_id"], None)
    return {**context, "form": {"confirm": request.form.get("confirm", "")}}


@on_domain_error(DETAIL, ERASE, _erase_again)
def identity_erase(user_id: int):
    """Erase the end user (admins; the internal id typed as confirmation): personal
    data gone everywhere, totals kept; then back to the directory."""
    limits_runtime = runtime().limits
    erased = erase_user_by_id(
        get_db(),
        user_id,
        request.form.get("confirm", ""),
        actor(),
        runtime().hash_key,
        limits_runtime.storage,
    )
    if erased is None:
        abort(404, "No such end user.")
    # the flash names no one: it travels in the session cookie
    flash(
        f"Erased the end user: {erased.identifiers} identifiers deleted, "
        f"{erased.requests} request rows anonymised, {erased.audit_entries} audit entries "
        f"redacted, {erased.keys} bound keys revoked{_renamed(erased)}; the totals stay."
    )
    if is_htmx():
        response = make_response("", 200)
        response.headers["HX-Redirect"] = url_for("console.identities_list")
        return response
    return back_to("console.identities_list")
