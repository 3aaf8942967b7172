"""Console: operators (admins only) — create, change role, disable and enable."""

from __future__ import annotations

from flask import flash, request

from blueprints.console_base import (
    actor,
    back_to,
    bp,
    form_error,
    get_db,
    is_htmx,
    render,
    require_admin,
)
from tally.services.operators import (
    ROLES,
    OperatorError,
    change_role,
    create_operator,
    list_operators,
    set_operator_active,
)

PAGE, PANEL = "operators/page.html", "operators/_panel.html"


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
    if not is_htmx():
        flash(message)
        return back_to("console.operators_list")
    return _panel(message=message)


def _failed(exc: OperatorError, form: dict | None = None):
    db = get_db()
    db.rollback()
    return form_error(
        PAGE, PANEL, str(exc), operators=list_operators(db), roles=ROLES, form=form or {}
    )


@bp.get("/operators")
def operators_list():
    """Every operator with role, status and last login."""
    require_admin()
    return _panel()


@bp.post("/operators")
def operators_create():
    """Add an operator."""
    form = {"email": request.form.get("email", ""), "role": request.form.get("role", "")}
    try:
        operator = create_operator(
            get_db(), form["email"], form["role"], request.form.get("password", ""), actor()
        )
    except OperatorError as exc:
        return _failed(exc, form)
    return _done(f"Created {operator.role} {operator.email}.")


@bp.post("/operators/<int:operator_id>/role")
def operators_role(operator_id: int):
    """Give an operator another role."""
    try:
        operator = change_role(get_db(), operator_id, request.form.get("role", ""), actor())
    except OperatorError as exc:
        return _failed(exc)
    return _done(f"{operator.email} is now {operator.role}.")


@bp.post("/operators/<int:operator_id>/active")
def operators_active(operator_id: int):
    """Disable (``active=off``) or enable (``active=on``) an operator."""
    active = request.form.get("active")
    if active not in ("on", "off"):
        return _failed(OperatorError("active must be on or off"))
    try:
        operator = set_operator_active(get_db(), operator_id, active == "on", actor())
    except OperatorError as exc:
        return _failed(exc)
    state = "enabled" if operator.is_active else "disabled"
    return _done(f"{operator.email} is {state}.")
