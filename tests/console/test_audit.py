"""The audit log page: newest first, filtered by kind and by actor, paginated."""

from __future__ import annotations

import ast
from pathlib import Path

import tally
from tally.audit import KINDS, add_audit
from tally.keys.api_keys import create_api_key
from tally.limits.policy_store import set_policy
from tally.usage.price_table import set_price
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


def test_a_key_creation_reads_as_words_not_python(admin, app):
    with app.extensions["tally"].sessions() as session:
        create_api_key(session, "web-backend", "ops@example.com")
        create_api_key(
            session, "browser", "ops@example.com", user_token=True, origins=["https://a.example"]
        )
    page = text(admin.get("/audit?kind=key", htmx=True))
    browser = page.split(">browser<", 1)[1].split("</tr>", 1)[0]
    plain = page.split(">web-backend<", 1)[1].split("</tr>", 1)[0]
    for change in ("bound user: –", "user token: no", "origins: –"):
        assert f"<li>{change}</li>" in plain
    assert "<li>user token: yes</li>" in browser
    assert "<li>origins: https://a.example</li>" in browser
    for python in ("False", "True", "None", "[]", "[&#39;"):
        assert python not in plain + browser


def actions_written() -> set[str]:
    """Every audit action the code writes: the action argument of each add_audit call
    in tally/ (a string, a conditional of strings, or a module constant)."""
    found = set()
    for path in Path(tally.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text())
        constants = {
            target.id: node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(tree):
            called = isinstance(node, ast.Call) and getattr(node.func, "id", "") == "add_audit"
            if not called or len(node.args) < 3:
                continue
            for part in ast.walk(node.args[2]):
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    found.add(part.value)
                elif isinstance(part, ast.Name) and part.id in constants:
                    found.add(constants[part.id])
    return found


def test_the_kind_filter_covers_every_action_the_code_writes(admin, app):
    actions = actions_written()
    assert {"config.update", "limits.set", "price.set", "idp.update"} <= actions
    assert {"identity.lookup", "identity.erase", "admin_token.create", "key.create"} <= actions
    for action in actions:
        kinds = [name for name, (prefix, _) in KINDS.items() if action.startswith(prefix)]
        assert len(kinds) == 1, (action, kinds)
    page = text(admin.get("/audit"))
    for label in (
        "config changes",
        "API keys",
        "admin API tokens",
        "operators",
        "limits",
        "prices",
        "identity provider",
        "identity lookups",
        "erasures",
    ):
        assert f">{label}</option>" in page
    with app.extensions["tally"].sessions() as session:
        for action in sorted(actions):
            add_audit(session, "cli", action, f"target of {action}")
        session.commit()
    for name, (prefix, _) in KINDS.items():
        shown = text(admin.get(f"/audit?kind={name}", htmx=True))
        for action in actions:
            assert (f">target of {action}<" in shown) is action.startswith(prefix), (name, action)


def test_budgets_and_prices_read_as_money(admin, app):
    with app.extensions["tally"].sessions() as session:
        set_policy(session, "tier:default", {"daily_budget": 0.5}, "ops@example.com")
        set_price(session, "m-1", 0.15, 0.6, None, "ops@example.com")
    limits = text(admin.get("/audit?kind=limits", htmx=True))
    assert "daily budget: <del>–</del> → <ins>$0.50</ins>" in limits
    assert "messages: <del>1000</del>" not in limits  # unchanged fields are not listed
    prices = text(admin.get("/audit?kind=price", htmx=True))
    for change in ("prompt: $0.15", "completion: $0.60", "cached: –"):
        assert f"<li>{change}</li>" in prices
