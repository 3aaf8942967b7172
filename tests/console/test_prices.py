"""Console /usage/prices: admins add, change and remove a model's prices (audited),
support sees the table and cannot change it, bad input is a 422 form message, and the
usage and identity pages say where a cost came from."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tally.db import utcnow
from tally.models import AuditEntry, EndUser, ModelPrice, RequestLog
from tests.helpers.console import text
from tests.helpers.rows import record_traffic


def prices(db) -> dict[str, tuple]:
    db.expire_all()
    return {p.model: (p.prompt, p.completion, p.cached) for p in db.scalars(select(ModelPrice))}


def test_the_usage_page_links_to_the_price_table(admin):
    page = text(admin.get("/usage"))
    assert 'href="/usage/prices"' in page
    page = text(admin.get("/usage/prices"))
    assert "No prices yet" in page and 'name="model"' in page


@pytest.mark.parametrize("htmx", [True, False])
def test_admin_adds_changes_and_removes_a_price_audited(admin, db, htmx):
    form = {"model": " openai/gpt-4o-mini ", "prompt": "0.15", "completion": "0.6", "cached": ""}
    response = admin.post("/usage/prices", form, htmx=htmx)
    assert response.status_code == (200 if htmx else 303)
    if htmx:
        assert text(response).lstrip().startswith('<div id="prices-panel"')
        assert "Saved the prices of openai/gpt-4o-mini." in text(response)
    assert prices(db) == {"openai/gpt-4o-mini": (0.15, 0.6, None)}
    page = text(admin.get("/usage/prices"))
    assert '<tr data-model="openai/gpt-4o-mini">' in page
    assert "$0.15" in page and "$0.60" in page and "as prompt" in page

    form.update(prompt="$0.2", cached="0.05")
    assert admin.post("/usage/prices", form, htmx=htmx).status_code in (200, 303)
    assert prices(db) == {"openai/gpt-4o-mini": (0.2, 0.6, 0.05)}

    response = admin.post("/usage/prices/remove", {"model": "openai/gpt-4o-mini"}, htmx=htmx)
    assert response.status_code in (200, 303)
    assert prices(db) == {}
    entries = db.scalars(
        select(AuditEntry).where(AuditEntry.action.startswith("price.")).order_by(AuditEntry.id)
    ).all()
    assert [(e.action, e.target, e.actor) for e in entries] == [
        ("price.set", "openai/gpt-4o-mini", admin.email),
        ("price.set", "openai/gpt-4o-mini", admin.email),
        ("price.remove", "openai/gpt-4o-mini", admin.email),
    ]
    assert entries[0].before is None
    assert entries[0].after == {"prompt": 0.15, "completion": 0.6, "cached": None}
    assert entries[1].before == entries[0].after
    assert entries[1].after == {"prompt": 0.2, "completion": 0.6, "cached": 0.05}
    assert entries[2].before == entries[1].after and entries[2].after is None
    assert "price.remove" in text(admin.get("/usage/prices"))  # the page's own audit list


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"model": "  ", "prompt": "1", "completion": "1"}, "model must not be empty."),
        (
            {"model": "m", "prompt": "-1", "completion": "1"},
            "prompt price must be a number of 0 or more.",
        ),
        (
            {"model": "m", "prompt": "1", "completion": "lots"},
            "completion price must be a number, not &#39;lots&#39;.",
        ),
        (
            {"model": "m", "prompt": "1", "completion": "1", "cached": "nan"},
            "cached price must be a number of 0 or more.",
        ),
        (
            {"model": "m", "prompt": "", "completion": "1"},
            "prompt price is required (USD per million tokens).",
        ),
        (
            {"model": "m" * 256, "prompt": "1", "completion": "1"},
            "model must be at most 255 characters.",
        ),
    ],
)
def test_bad_input_is_a_422_message_with_the_form_kept(admin, db, form, message):
    response = admin.post("/usage/prices", form, htmx=True)
    assert response.status_code == 422
    assert message in text(response)
    assert f'value="{form["prompt"]}"' in text(response)
    assert prices(db) == {}
    assert db.scalars(select(AuditEntry).where(AuditEntry.action.startswith("price."))).all() == []


def test_removing_an_unknown_model_is_a_422(admin):
    response = admin.post("/usage/prices/remove", {"model": "ghost"}, htmx=True)
    assert response.status_code == 422
    assert "No price is set for &#39;ghost&#39;." in text(response)


def test_support_sees_the_table_but_cannot_change_it(make_console, db):
    admin, support = make_console("admin"), make_console("support")
    admin.post("/usage/prices", {"model": "m1", "prompt": "1", "completion": "2"})
    page = text(support.get("/usage/prices"))
    assert '<tr data-model="m1">' in page
    assert "Set a model&#39;s prices" not in page and "Remove</button>" not in page
    form = {"model": "m2", "prompt": "1", "completion": "2"}
    assert support.post("/usage/prices", form).status_code == 403
    assert support.post("/usage/prices/remove", {"model": "m1"}).status_code == 403
    assert set(prices(db)) == {"m1"}


def test_logged_out_visitors_are_sent_to_login(make_console):
    response = make_console(None).get("/usage/prices")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_a_change_needs_the_csrf_token(admin, db):
    form = {"model": "m", "prompt": "1", "completion": "2"}
    assert admin.post("/usage/prices", form, csrf=False).status_code == 400
    assert prices(db) == {}


def test_the_identity_page_says_where_a_cost_came_from(admin, db):
    record_traffic(db, [{"user": "ada", "when": utcnow(), "cost": 0.5}])
    user = db.scalars(select(EndUser)).one()
    row = db.scalars(select(RequestLog)).one()
    assert row.cost_source == "upstream"
    page = text(admin.get(f"/identities/{user.id}"))
    assert "price table</span>" not in page and "estimated</span>" not in page
    row.cost_source = "price_table"
    db.commit()
    assert "price table</span>" in text(admin.get(f"/identities/{user.id}"))
    row.cost_source, row.cost = "estimated", None
    db.commit()
    assert "estimated</span>" in text(admin.get(f"/identities/{user.id}"))


def test_the_page_counts_estimated_costs_awaiting_the_upstream(admin, db):
    assert "No estimated cost is awaiting the upstream." in text(admin.get("/usage/prices"))
    record_traffic(db, [{"user": "ada", "when": utcnow()} for _ in range(2)])
    for row in db.scalars(select(RequestLog)):
        row.cost_source, row.reconcile_after = "estimated", utcnow()
    db.commit()
    page = text(admin.get("/usage/prices"))
    assert "2 requests from OpenRouter streams cut before their usage are awaiting" in page
