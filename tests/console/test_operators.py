"""Operators (admins only): create, change role, disable/enable; guards and audit."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tally.models import AuditEntry, Operator
from tests.helpers.console import PASSWORD, Console, text


def operator(db, email: str) -> Operator:
    db.expire_all()
    return db.scalars(select(Operator).where(Operator.email == email)).one()


def last_audit(db, action: str) -> AuditEntry:
    return db.scalars(
        select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id.desc())
    ).first()


@pytest.mark.parametrize("htmx", [True, False])
def test_create_an_operator_who_can_log_in(admin, app, db, htmx):
    form = {"email": "New@Example.com", "role": "support", "password": PASSWORD}
    response = admin.post("/operators", form, htmx=htmx)
    assert response.status_code == (200 if htmx else 303)
    assert "new@example.com" in text(admin.get("/operators"))
    assert operator(db, "new@example.com").role == "support"
    entry = last_audit(db, "operator.create")
    assert entry.actor == admin.email and entry.after == {"role": "support"}
    assert Console(app).login("new@example.com").status_code == 303


@pytest.mark.parametrize(
    "form,message",
    [
        ({"email": "not-an-email", "role": "admin", "password": PASSWORD}, "valid e-mail"),
        ({"email": "a" * 400 + "@example.com", "role": "admin", "password": PASSWORD}, "valid"),
        ({"email": "a@example.com", "role": "root", "password": PASSWORD}, "role must be"),
        ({"email": "a@example.com", "role": "admin", "password": "short"}, "at least 8"),
        ({"email": "a@example.com", "role": "admin", "password": "password1"}, "too easy"),
        ({"email": "ann@example.com", "role": "admin", "password": "ann@example.com"}, "e-mail"),
        ({"email": "b@example.com", "role": "admin", "password": "gatewaytally"}, "words"),
    ],
)
def test_bad_operator_form_is_a_422_message(admin, form, message):
    response = admin.post("/operators", form, htmx=True)
    assert response.status_code == 422
    assert message in text(response)
    assert f'value="{form["email"]}"' in text(response)


def test_duplicate_operator_is_a_422_message(admin):
    response = admin.post(
        "/operators", {"email": admin.email, "role": "admin", "password": PASSWORD}
    )
    assert response.status_code == 422
    assert "already exists" in text(response)


def test_change_role_with_audit(admin, make_operator, db):
    email = make_operator("support")
    target = operator(db, email)
    response = admin.post(f"/operators/{target.id}/role", {"role": "admin"}, htmx=True)
    assert response.status_code == 200
    assert operator(db, email).role == "admin"
    entry = last_audit(db, "operator.role")
    assert (entry.actor, entry.target) == (admin.email, email)
    assert entry.before == {"role": "support"} and entry.after == {"role": "admin"}


def test_disable_logs_out_and_enable_restores(admin, make_console, db):
    agent = make_console("support")
    target = operator(db, agent.email)
    assert agent.get("/").status_code == 200
    response = admin.post(f"/operators/{target.id}/active", {"active": "off"}, htmx=True)
    assert response.status_code == 200 and "is disabled" in text(response)
    assert agent.get("/").status_code == 302
    assert last_audit(db, "operator.disable").before == {"active": True}
    admin.post(f"/operators/{target.id}/active", {"active": "on"})
    assert operator(db, agent.email).is_active
    assert last_audit(db, "operator.enable").after == {"active": True}


def test_the_last_admin_cannot_be_demoted_or_disabled(admin, make_operator, db):
    me = operator(db, admin.email)
    response = admin.post(f"/operators/{me.id}/role", {"role": "support"}, htmx=True)
    assert response.status_code == 422
    assert "last active admin" in text(response)
    assert operator(db, admin.email).role == "admin"
    response = admin.post(f"/operators/{me.id}/active", {"active": "off"}, htmx=True)
    assert response.status_code == 422
    other = operator(db, make_operator("admin"))
    assert admin.post(f"/operators/{other.id}/active", {"active": "off"}).status_code == 303


def test_nobody_disables_themselves(admin, make_operator, db):
    make_operator("admin")
    me = operator(db, admin.email)
    response = admin.post(f"/operators/{me.id}/active", {"active": "off"}, htmx=True)
    assert response.status_code == 422
    assert "your own account" in text(response)


@pytest.mark.parametrize(
    "path,form",
    [
        ("/operators/{id}/role", {"role": "nobody"}),
        ("/operators/{id}/active", {"active": "maybe"}),
        ("/operators/9999/role", {"role": "admin"}),
    ],
)
def test_bad_operator_action_is_a_422(admin, db, path, form):
    me = operator(db, admin.email)
    response = admin.post(path.format(id=me.id), form, htmx=True)
    assert response.status_code == 422


@pytest.mark.parametrize(
    "path,form",
    [
        ("/operators", {"email": "x@example.com", "role": "admin", "password": PASSWORD}),
        ("/operators/{id}/role", {"role": "admin"}),
        ("/operators/{id}/active", {"active": "off"}),
    ],
)
def test_support_is_refused(support, admin, db, path, form):
    me = operator(db, support.email)
    assert support.post(path.format(id=me.id), form).status_code == 403
    assert support.post(path.format(id=me.id), form, htmx=True).status_code == 403
    assert operator(db, support.email).role == "support"
    assert db.scalars(select(Operator).where(Operator.email == "x@example.com")).first() is None


def test_missing_csrf_is_refused(admin, db):
    form = {"email": "x@example.com", "role": "admin", "password": PASSWORD}
    assert admin.post("/operators", form, csrf=False).status_code == 400
    assert db.scalars(select(Operator).where(Operator.email == "x@example.com")).first() is None
