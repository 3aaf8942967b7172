"""The tracking-config page: save, preview, history, rollback; roles, CSRF, audit."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from tally.models import AuditEntry, ConfigRevision
from tally.tracking.config import TrackingConfig
from tally.tracking.identifiers import derive_identifier
from tally.tracking.store import active_config
from tests.helpers.console import text
from tests.helpers.settings import HASH_KEY

FORM = {
    "enabled": "on",
    "prefix": "tally",
    "hash_mode": "hmac-sha256",
    "hash_length": "16",
    "dialect": "openrouter",
    "cache_key": "off",
    "forward_profile": "off",
    "require_identity": "off",
}


def revisions(db) -> int:
    return db.scalar(select(func.count(ConfigRevision.id)))


def test_form_fields_carry_the_config_names(admin):
    page = text(admin.get("/config"))
    for name in FORM:
        assert f'name="{name}"' in page


@pytest.mark.parametrize("htmx", [True, False])
def test_save_makes_a_revision_with_an_audit_entry(admin, db, htmx):
    response = admin.post(
        "/config", {**FORM, "prefix": "acme", "hash_mode": "none", "comment": "go"}, htmx=htmx
    )
    if htmx:
        assert response.status_code == 200
        assert text(response).lstrip().startswith('<div id="config-panel"')
        assert "Saved revision 2." in text(response)
    else:
        assert response.status_code == 303
        assert "Saved revision 2." in text(admin.get("/config"))
    config = active_config(db)
    assert (config.prefix, config.hash_mode) == ("acme", "none")
    entry = db.scalars(select(AuditEntry).where(AuditEntry.action == "config.update")).one()
    assert entry.actor == admin.email
    assert entry.before["prefix"] == "tally" and entry.after["prefix"] == "acme"
    assert entry.before["hash_mode"] == "hmac-sha256" and entry.after["hash_mode"] == "none"


def test_history_shows_who_when_and_before_after(admin):
    admin.post("/config", {**FORM, "prefix": "acme"})
    page = text(admin.get("/config"))
    history = page.split('id="config-history"', 1)[1]
    assert "Revision 2" in history and "Revision 1" in history
    assert admin.email in history
    assert re.search(r"<del>tally</del> → <ins>acme</ins>", history)


def test_nothing_changed_saves_nothing(admin, db):
    before = revisions(db)
    response = admin.post("/config", FORM, htmx=True)
    assert "Nothing changed" in text(response)
    assert revisions(db) == before


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("prefix", "bad prefix!", "prefix must be"),
        ("hash_length", "7", "hash_length must be"),
        ("hash_length", "lots", "hash_length must be"),
        ("hash_mode", "md5", "hash_mode must be"),
        ("dialect", "soap", "dialect must be"),
        ("enabled", "maybe", "enabled must be"),
    ],
)
@pytest.mark.parametrize("htmx", [True, False])
def test_bad_value_is_a_422_form_message_and_nothing_is_lost(
    admin, db, field, value, message, htmx
):
    before = revisions(db)
    typed = {**FORM, "prefix": "kept", field: value, "preview_id": "alice"}
    response = admin.post("/config", typed, htmx=htmx)
    assert response.status_code == 422
    page = text(response)
    assert message in page
    if field in ("prefix", "hash_length"):
        assert f'value="{value}"' in page
    if field != "prefix":
        assert 'value="kept"' in page
    assert 'value="alice"' in page
    assert revisions(db) == before


def test_preview_shows_current_and_edited_identifiers(admin):
    edits = {"prefix": "acme", "hash_mode": "sha256", "hash_length": "12", "preview_id": "alice"}
    response = admin.get("/config/preview", query_string={**FORM, **edits}, htmx=True)
    assert response.status_code == 200
    body = text(response).lstrip()
    assert body.startswith('<div id="config-preview"')
    current = derive_identifier(TrackingConfig(), "alice", HASH_KEY.encode())
    edited = derive_identifier(
        TrackingConfig(prefix="acme", hash_mode="sha256", hash_length=12), "alice", b""
    )
    assert current in body and edited in body


def test_preview_of_a_bad_value_names_the_problem(admin):
    response = admin.get("/config/preview?prefix=no%20spaces&preview_id=a", htmx=True)
    assert response.status_code == 200
    assert "prefix must be" in text(response)


def test_preview_warns_when_unhashed_ids_may_be_too_long_for_the_dialect(admin):
    query = {**FORM, "dialect": "openai", "hash_mode": "none", "prefix": "acme", "preview_id": "a"}
    body = text(admin.get("/config/preview", query_string=query, htmx=True))
    assert (
        "The openai dialect takes identifiers of at most 64 characters: requests whose "
        "end-user id is longer than 59 characters will be refused with 400."
    ) in body
    long_id = {**query, "preview_id": "u" * 60}
    body = text(admin.get("/config/preview", query_string=long_id, htmx=True))
    assert "longer than the 64 characters the openai dialect allows" in body
    hashed = {**query, "hash_mode": "sha256"}
    assert 'data-preview="warning"' not in text(
        admin.get("/config/preview", query_string=hashed, htmx=True)
    )


def test_a_config_whose_identifiers_exceed_the_dialect_is_refused(admin, db):
    form = {**FORM, "dialect": "openai", "prefix": "p" * 48}
    response = admin.post("/config", form, htmx=True)
    assert response.status_code == 422
    assert "at most 64 characters; this prefix and hash_length give 65" in text(response)
    assert revisions(db) == 1


def test_cache_key_and_the_compatible_dialect_are_saved(admin, db):
    admin.post("/config", {**FORM, "dialect": "compatible", "cache_key": "on"})
    config = active_config(db)
    assert (config.dialect, config.cache_key) == ("compatible", True)


def test_preview_with_tracking_off_sends_nothing(admin):
    response = admin.get("/config/preview?enabled=off&preview_id=a", htmx=True)
    assert "nothing sent" in text(response)


def test_preview_without_htmx_is_the_page(admin):
    response = admin.get("/config/preview?prefix=acme&preview_id=bob")
    assert "<html" in text(response)
    assert "acme_" in text(response)


def test_rollback_is_a_new_revision_copying_the_old_one(admin, db):
    admin.post("/config", {**FORM, "prefix": "acme", "hash_mode": "none"})
    admin.post("/config", {**FORM, "prefix": "zeta", "hash_mode": "sha256"})
    response = admin.post("/config/revisions/2/rollback", htmx=True)
    assert response.status_code == 200
    assert "Rolled back to revision 2: saved as revision 4." in text(response)
    config = active_config(db)
    assert (config.revision_id, config.prefix, config.hash_mode) == (4, "acme", "none")
    revision = db.get(ConfigRevision, 4)
    assert revision.comment == "rollback to revision 2" and revision.created_by == admin.email
    entry = db.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())).first()
    assert entry.action == "config.update"
    assert entry.before["prefix"] == "zeta" and entry.after["prefix"] == "acme"


def test_rollback_to_a_missing_revision_is_a_message(admin):
    response = admin.post("/config/revisions/999/rollback", htmx=True)
    assert response.status_code == 422
    assert "no config revision 999" in text(response)


@pytest.mark.parametrize(
    "path,data",
    [("/config", {**FORM, "prefix": "support"}), ("/config/revisions/1/rollback", {})],
)
def test_support_cannot_change_the_config(support, db, path, data):
    before = revisions(db)
    assert support.post(path, data).status_code == 403
    assert support.post(path, data, htmx=True).status_code == 403
    assert revisions(db) == before


@pytest.mark.parametrize("path", ["/config", "/config/revisions/1/rollback"])
def test_missing_csrf_token_is_refused(admin, db, path):
    assert admin.app.config.get("WTF_CSRF_ENABLED", True)  # enforced despite TESTING
    before = revisions(db)
    response = admin.post(path, {**FORM, "prefix": "nocsrf"}, csrf=False)
    assert response.status_code == 400
    response = admin.client.post(
        path, data={**FORM, "prefix": "nocsrf"}, headers={"X-CSRFToken": "forged"}
    )
    assert response.status_code == 400
    assert revisions(db) == before
