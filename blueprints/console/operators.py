"""Console: operators (admins only) — create, change role, disable and enable."""

from __future__ import annotations

from flask import Blueprint, request

from blueprints.console.base import (
    actor,
    changed,
    get_db,
    on_domain_error,
    render,
    require_admin,
)
from tally.operators.accounts import (
    ROLES,
    OperatorError,
    change_role,
    create_operator,
    list_operators,
    set_operator_active,
)

PAGE, PANEL = "operators/page.html", "operators/_panel.html"


def register(bp: Blueprint) -> None:
    """The operators' routes on the console blueprint ``bp``."""
    bp.get("/operators")(operators_list)
    bp.post("/operators")(operators_create)
    bp.post("/operators/<int:operator_id>/role")(operators_role)
    bp.post("/operators/<int:operator_id>/active")(operators_active)


def _panel(status: int = 200, form: dict | None = None, **extra):
    return render(
        PAGE,
        PANEL,
        status,
        operators=list_operators(get_db()),
        roles=ROLES,
        form=form or {},
        **extra,
    )


def _done(message: str):
    return changed(message, "console.operators_list", _panel)


def _form_again() -> dict:
    form = {"email": request.form.get("email", ""), "role": request.form.get("role", "")}
    return {"operators": list_operators(get_db()), "roles": ROLES, "form": form}


def operators_list():
    """Every operator with role, status and last login."""
    require_admin()
    return _panel()


@on_domain_error(PAGE, PANEL, _form_again)
def operators_create():
    """Add an operator."""
    form = request.form
    operator = create_operator(
        get_db(), form.get("email", ""), form.get("role", ""), form.get("password", ""), actor()
    )
    return _done(f"Created {operator.role} {operator.email}.")


@on_domain_error(PAGE, PANEL, _form_again)
def operators_role(operator_id: int):
    """Give an operator another role."""
    operator = change_role(get_db(), operator_id, request.form.get("role", ""), actor())
    return _done(f"{operator.email} is now {operator.role}.")


@on_domain_error(PAGE, PANEL, _form_again)
def operators_active(operator_id: int):
    """Disable (``active=off``) or enable (``active=on``) an operator."""
    active = request.form.get("active")
    if active not in ("on", "off"):
        raise OperatorError("active must be on or off", "active")
    operator = set_operator_active(get_db(), operator_id, active == "on", actor())
    state = "enabled" if operator.is_active else "disabled"
    return _done(f"{operator.email} is {state}.")
