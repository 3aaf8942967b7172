"""Console: limits — tiers, user overrides and key policies (admins change them,
support looks), who is limited now or near a limit, resetting a user, the changes'
audit entries, and the login throttling that guards this console."""

from __future__ import annotations

from flask import Blueprint, current_app, flash, request

from blueprints.console.base import (
    actor,
    back_to,
    get_db,
    is_htmx,
    money,
    on_domain_error,
    render,
    runtime,
)
from tally.audit import recent_audit
from tally.db import utcnow
from tally.limits.policy import (
    BUDGET_FIELDS,
    FIELDS,
    PolicyError,
    format_value,
    parse_scope,
    parse_tier_key,
    parse_value,
)
from tally.limits.policy_store import (
    read_policies,
    reset_user,
    set_policy,
    set_tier_key,
    unseen_user_warning,
    unset_policy,
)
from tally.limits.status import busiest_users

PAGE, PANEL = "limits/page.html", "limits/_panel.html"
AUDIT_ENTRIES = 20


def register(bp: Blueprint) -> None:
    """The limits' routes and the ``limit_value`` filter on the console blueprint ``bp``."""
    bp.get("/limits")(limits_page)
    bp.post("/limits/policies")(limits_set)
    bp.post("/limits/policies/unset")(limits_unset)
    bp.post("/limits/tier-key")(limits_tier_key)
    bp.post("/limits/reset")(limits_reset)
    bp.add_app_template_filter(limit_value, "limit_value")


def _context(**extra):
    db = get_db()
    policies = read_policies(db)
    config = current_app.config
    limits_runtime = runtime().limits
    audit = recent_audit(db, "limits.", AUDIT_ENTRIES)
    return {
        "policies": [(s, policies.tier(s) or policies.by_scope[s]) for s in policies.all_scopes()],
        "tier_key": policies.tier_key,
        "fields": FIELDS,
        "users": busiest_users(db, runtime().limits, utcnow()),
        "audit": audit,
        "storage": limits_runtime.description if limits_runtime else "none",
        "fail": limits_runtime.fail if limits_runtime else "open",
        "per_account": config["LOGIN_LIMIT_PER_ACCOUNT"],
        "per_ip": config["LOGIN_LIMIT_PER_IP"],
        "per_device": config["LOGIN_LIMIT_PER_DEVICE"],
        "form": {},
        **extra,
    }


def _panel(**extra):
    return render(PAGE, PANEL, **_context(**extra))


def _done(message: str, warning: str | None = None):
    """After a change: the panel again (HTMX), or the page with the messages flashed."""
    if not is_htmx():
        flash(message)
        if warning:
            flash(warning, "warning")
        return back_to("console.limits_page")
    return _panel(message=message, warning=warning)


def limits_page():
    """Every policy, the tier key, who is limited or near a limit, recent changes."""
    return render(PAGE, PANEL, **_context())


def _typed() -> dict[str, str]:
    form = {"scope": request.form.get("scope", "").strip()}
    form.update({name: request.form.get(name, "").strip() for name in FIELDS})
    return form


@on_domain_error(PAGE, PANEL, lambda: _context(form=_typed()))
def limits_set():
    """Set the fields of one scope's policy (blank fields are left as they are)."""
    form = _typed()
    fields = {name: parse_value(name, form[name]) for name in FIELDS if form[name]}
    if not fields:
        raise PolicyError("set at least one field (a number, an amount, or none)")
    db = get_db()
    set_policy(db, form["scope"], fields, actor())
    scope = parse_scope(form["scope"])
    return _done(f"Saved the policy of {scope}.", unseen_user_warning(db, scope))


@on_domain_error(PAGE, PANEL, _context)
def limits_unset():
    """Drop one scope's policy (a user override, a tier, a key's policy)."""
    scope = request.form.get("scope", "")
    unset_policy(get_db(), scope, actor())
    return _done(f"Removed the policy of {scope}.")


@on_domain_error(PAGE, PANEL, _context)
def limits_tier_key():
    """The identity metadata key whose value names a user's tier."""
    value = parse_tier_key(request.form.get("tier_key", "").strip())
    set_tier_key(get_db(), value, actor())
    return _done(f"Tiers are now picked by the metadata key {value!r}.")


@on_domain_error(PAGE, PANEL, _context)
def limits_reset():
    """Clear one user's counters now (their limit is lifted until they use it again)."""
    scope = request.form.get("scope", "")
    reset_user(get_db(), scope, actor())
    return _done(f"Reset the counters of {scope}.")


def limit_value(value, name: str) -> str:
    """A limit's value or an amount of it: a budget as money (the console's one money
    format), a count as the CLI prints it, ``none`` for no limit."""
    if value is not None and name in BUDGET_FIELDS:
        return money(value)
    return format_value(name, value)
