"""The audit log page: newest first, filtered by kind and by actor, paginated."""

from __future__ import annotations

from tally.audit import add_audit
from tests.helpers.console import text


def fill(app):
    with app.extensions["tally"].sessions() as session:
        add_audit(session, "cli", "config.update", "revision 2", {"prefix": "a"}, {"prefix": "b"})
        add_audit(session, "ops@example.com", "key.create", "web", None, {"name": "web"})
        add_audit(session, "help@example.com", "identity.lookup", "tally_x", None, {"results": 1})
        session.commit()


def test_everything_newest_first_with_before_and_after(admin, app):
    fill(app)
    page = text(admin.get("/audit"))
    assert page.index("identity.lookup") < page.index("key.create") < page.index("config.update")
    assert "<del>a</del>" in page and "<ins>b</ins>" in page


def test_filter_by_kind_and_actor(admin, app):
    fill(app)
    only_config = text(admin.get("/audit?kind=config", htmx=True))
    assert "config.update" in only_config and "key.create" not in only_config
    only_help = text(admin.get("/audit?actor=HELP@", htmx=True))
    assert "identity.lookup" in only_help and "config.update" not in only_help
    assert "1 entry" in only_help


def test_pagination(admin, app):
    with app.extensions["tally"].sessions() as session:
        for n in range(120):
            add_audit(session, "cli", "key.revoke", f"k{n}")
        session.commit()
    page = text(admin.get("/audit?kind=key&page=3", htmx=True))
    assert "Page 3 of 3" in page and ">k19<" in page and ">k20<" not in page


def test_support_can_read_the_audit_log(support, app):
    fill(app)
    assert "key.create" in text(support.get("/audit"))
