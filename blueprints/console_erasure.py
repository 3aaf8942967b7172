"""Console: erasing an end user from their identity page (admins, the internal id typed
as confirmation; tally.privacy.erasure)."""

from __future__ import annotations

from flask import abort, flash, make_response, request, url_for

from blueprints.console_base import actor, back_to, bp, get_db, is_htmx, on_domain_error, runtime
from blueprints.console_identities import DETAIL, detail_context
from tally.privacy.erasure import erase_user_by_id

FRAGMENT = "identities/_erase.html"


def _erase_again() -> dict:
    """The page again after a refused erasure, with what was typed (not re-audited)."""
    context = detail_context(request.view_args["user_id"], None)
    return {**context, "form": {"confirm": request.form.get("confirm", "")}}


@bp.post("/identities/<int:user_id>/erase")
@on_domain_error(DETAIL, FRAGMENT, _erase_again)
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
        f"redacted, {erased.keys} bound keys revoked; the totals stay."
    )
    if is_htmx():
        response = make_response("", 200)
        response.headers["HX-Redirect"] = url_for("console.identities_list")
        return response
    return back_to("console.identities_list")
