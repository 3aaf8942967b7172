"""Every console page as a full page and as its HTMX fragment; roles; user-provided text
shown as text; the vendored htmx; error pages."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from tally.end_users.directory import upsert_end_user, upsert_identifier
from tests.helpers.console import text

ROOT = Path(__file__).resolve().parents[2]
PAGES = ["/", "/config", "/identities", "/usage", "/keys", "/limits", "/audit", "/operators"]
# page -> the id of the fragment its HTMX requests get
FRAGMENTS = {
    "/config": "config-panel",
    "/identities?q=x": "identity-results",
    "/usage": "usage-report",
    "/keys": "keys-panel",
    "/audit": "audit-entries",
    "/operators": "operators-panel",
}
XSS = '<script>alert("x")</script>'


@pytest.mark.parametrize("path", PAGES)
def test_admin_sees_every_page(admin, path):
    response = admin.get(path)
    assert response.status_code == 200
    page = text(response)
    assert page.startswith("<!doctype html>")
    assert 'name="csrf-token"' in page
    assert "hx-headers" in page


@pytest.mark.parametrize("path", [p for p in PAGES if p != "/operators"])
def test_support_sees_every_page_but_operators(support, path):
    assert support.get(path).status_code == 200


def test_support_is_refused_the_operators_page(support):
    assert support.get("/operators").status_code == 403


def test_support_sees_no_change_controls(support):
    page = text(support.get("/config"))
    assert "Save as a new revision" not in page
    assert 'fieldset id="config-fields" disabled' in page
    assert "Create key" not in text(support.get("/keys"))
    assert "/operators" not in text(support.get("/"))  # not in the navigation


@pytest.mark.parametrize("path,target", FRAGMENTS.items())
def test_htmx_gets_the_fragment_and_a_page_load_gets_the_page(admin, path, target):
    fragment = admin.get(path, htmx=True)
    assert fragment.status_code == 200
    body = text(fragment).lstrip()
    assert re.match(rf'<(div|section) id="{target}"', body), body[:200]
    assert "<html" not in body
    assert "HX-Request" in fragment.headers["Vary"]
    page = admin.get(path)
    assert "<html" in text(page) and f'id="{target}"' in text(page)
    assert "HX-Request" in page.headers["Vary"]
    # Back/forward after a pushed URL asks for the page, not the fragment.
    restored = admin.get(path, headers={"HX-History-Restore-Request": "true"}, htmx=True)
    assert "<html" in text(restored)


def test_layout_loads_only_local_scripts_and_styles(admin):
    page = text(admin.get("/"))
    scripts = re.findall(r"<script[^>]*>", page)
    assert scripts and all('src="/static/' in s for s in scripts)
    assert "<style" not in page and " style=" not in page
    assert re.search(r"<script>|<script [^>]*>[^<]", page) is None  # no inline code
    assert "htmx-2.0.11.min.js" in page


def test_vendored_htmx_matches_its_recorded_checksum(client):
    readme = (ROOT / "static" / "README.md").read_text()
    recorded = re.search(r"`htmx-2\.0\.11\.min\.js`.*`([0-9a-f]{64})` \|", readme).group(1)
    served = client.get("/static/htmx-2.0.11.min.js")
    assert served.status_code == 200
    assert hashlib.sha256(served.data).hexdigest() == recorded
    assert b'version:"2.0.11"' in served.data


@pytest.fixture
def hostile_user(app):
    """An end user whose every profile field is markup, as an API client may send it."""
    with app.extensions["tally"].sessions() as session:
        user_id = upsert_end_user(
            session,
            "u<b>1</b>",
            {
                "display_name": XSS,
                "email": "x@example.com",
                "metadata": [{"<i>k</i>": "<img src=x onerror=alert(1)>"}],
                "tags": ["<u>tag</u>"],
                "logo_url": "javascript:alert(1)",
            },
        )
        upsert_identifier(session, "tally_<em>id</em>", user_id, 1)
        session.commit()
    return user_id


def test_user_provided_text_is_escaped_everywhere(admin, hostile_user):
    pages = [
        admin.get("/identities"),
        admin.get("/identities?q=u<b>"),
        admin.get(f"/identities/{hostile_user}"),
    ]
    for response in pages:
        page = text(response)
        assert response.status_code == 200
        assert XSS not in page
        assert "<b>1</b>" not in page and "<img" not in page and "<u>tag</u>" not in page
    detail = text(pages[2])
    assert "&lt;script&gt;alert(" in detail
    assert "u&lt;b&gt;1&lt;/b&gt;" in detail
    assert 'href="javascript:' not in detail


def test_not_found_is_a_console_page(admin):
    response = admin.get("/no/such/page")
    assert response.status_code == 404
    assert "<html" in text(response)
    assert admin.get("/identities/999999").status_code == 404


def test_a_failure_inside_a_view_is_a_500_page_without_a_trace(make_app):
    app = make_app()
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret detail")

    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert "secret detail" not in text(response)
    assert "Traceback" not in text(response)


@pytest.mark.parametrize(
    "method,path,data",
    [
        ("get", "/identities?q=a%00b", None),
        ("get", "/audit?actor=a%00", None),
        ("get", "/usage?start=2026-01-01%00", None),
        ("post", "/keys", {"name": "a\x00b"}),
        ("post", "/keys", {"name": "k", "user": "u\x00"}),
        ("post", "/operators", {"email": "a\x00@example.com", "role": "admin", "password": "x"}),
        ("post", "/config", {"prefix": "zz", "comment": "x\x00"}),
    ],
)
def test_nul_characters_are_a_bad_request_not_a_500(admin, method, path, data):
    """PostgreSQL cannot store NUL; a person never types one."""
    response = admin.get(path) if method == "get" else admin.post(path, data)
    assert response.status_code == 400
    assert "NUL" in text(response)


def test_nul_in_a_login_is_a_bad_request(app):
    from tests.helpers.console import Console

    assert Console(app).login("a\x00@example.com", "x").status_code == 400
