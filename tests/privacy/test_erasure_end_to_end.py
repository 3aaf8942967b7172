"""Erasure end to end: the end user's internal id, display name and e-mail are written
everywhere a person can put them through the real surfaces — API calls over HTTP on
every endpoint and every way of naming the user (request rows, identifiers, an upstream
error quoting them), a key bound to them, a config comment, limit overrides and resets,
identity searches and a profile view (audited) — then erased from the console or the
CLI; a scan of every text column of every table (tests/erasure_support.py) finds none
of it, the bystander is kept, and the totals are whole."""

from __future__ import annotations

import pytest
import requests
from sqlalchemy import select

from tally.models import EndUser, UpstreamIdentifier
from tests.helpers.api import chat
from tests.helpers.console import text
from tests.helpers.erasure import (
    EMAIL,
    LOGO,
    NAME,
    OTHER,
    USER,
    assert_totals_whole,
    find_anywhere,
    snapshot_totals,
)
from tests.helpers.payloads import chunks, embedding_answer, response_object

PROFILE = {
    "id": USER,
    "display_name": NAME,
    "email": EMAIL,
    "logo_url": LOGO,
    "metadata": [{"plan": "pro"}, {"company": "Quintero Labs"}],
    "tags": ["vip"],
}


def cli(server, *args: str) -> str:
    """Run ``flask --app app …`` on the served app; its output."""
    result = server.flask_app.test_cli_runner().invoke(args=list(args))
    assert result.exit_code == 0, result.output
    return result.output


def api(server, path: str, body: dict, key: str | None = None, **headers):
    """POST ``body`` to ``/v1/{path}`` over HTTP; the whole answer read."""
    sent = {"Authorization": f"Bearer {key or server.key}", **headers}
    response = requests.post(f"{server.url}/v1/{path}", json=body, headers=sent, timeout=10)
    response.content  # noqa: B018  (a stream is read to its end: the row is written)
    return response


def call_as_them(server, upstream, bound_key: str) -> None:
    """Every endpoint, every way of naming the user, an upstream error quoting them."""
    chat(server, identity=PROFILE)
    upstream.reply(events=chunks(["Hi"]))
    chat(server, user=USER, stream=True).content  # noqa: B018
    upstream.reply(json=response_object())
    api(server, "responses", {"model": "m", "input": "Hi", "safety_identifier": USER})
    upstream.reply(json=embedding_answer())
    api(server, "embeddings", {"model": "m", "input": "Hi"}, **{"X-Tally-User": USER})
    sent = upstream.last.body["user"]
    quote = f"user {sent} ({EMAIL}, {NAME}) is not allowed"
    upstream.reply(status=400, json={"error": {"message": quote, "code": 400}})
    assert chat(server, user=USER).status_code == 400
    assert chat(server, key=bound_key).status_code == 200
    assert chat(server, user=OTHER).status_code == 200


def write_them_everywhere(server, upstream, console, key_name: str) -> int:
    """The person written everywhere through the console, the CLI and the API; returns
    their end user's row id."""
    bound = cli(server, "keys", "create", key_name, "--user", USER).splitlines()[-1]
    call_as_them(server, upstream, bound)
    comment = f"new prefix, asked by {NAME} <{EMAIL}> for {USER}"
    assert console.post("/config", {"prefix": "acme", "comment": comment}).status_code == 303
    call_as_them(server, upstream, bound)  # a second identifier, under revision 2
    scope = f"user:{USER}"
    assert console.post("/limits/policies", {"scope": scope, "messages": "500"}).status_code == 303
    assert console.post("/limits/reset", {"scope": scope}).status_code == 303
    cli(server, "limits", "set", scope, "daily_tokens=50000")
    cli(server, "limits", "reset", scope)
    key_policy = {"scope": f"key:{key_name}", "messages": "900"}
    assert console.post("/limits/policies", key_policy).status_code == 303
    with server.flask_app.extensions["tally"].sessions() as session:
        user_id = session.scalar(select(EndUser.id).where(EndUser.external_id == USER))
    identifier = upstream.requests[-2].body["user"]
    for query in (NAME, EMAIL, USER, identifier, "zelda"):
        assert console.get(f"/identities?q={query}").status_code == 200
    assert USER in text(console.get(f"/identities/{user_id}"))
    return user_id


def erase(server, console, how: str, user_id: int) -> None:
    """Erase the user from the console (the internal id typed) or with the CLI."""
    if how == "console":
        response = console.post(f"/identities/{user_id}/erase", {"confirm": USER})
        assert response.status_code == 303, text(response)[:500]
    else:
        cli(server, "users", "erase", USER)


def needles(server, user_id: int) -> list[str]:
    """What must be found nowhere: the id, name, e-mail and logo, and every identifier
    sent for them."""
    with server.flask_app.extensions["tally"].sessions() as session:
        sent = session.scalars(
            select(UpstreamIdentifier.identifier).where(UpstreamIdentifier.user_id == user_id)
        ).all()
    assert len(sent) == 2  # one per config revision
    return [USER, NAME, EMAIL, LOGO, *sent]


def erase_and_scan(server, upstream, console, how: str, key_name: str) -> list[str]:
    """Write the person everywhere, erase them; what the scan still finds."""
    user_id = write_them_everywhere(server, upstream, console, key_name)
    engine = server.flask_app.extensions["tally"].engine
    wanted = needles(server, user_id)
    before = find_anywhere(engine, wanted)
    for needle in wanted:  # the scan sees each of them before
        assert any(repr(needle) in hit for hit in before), needle
    with server.flask_app.extensions["tally"].sessions() as session:
        totals = snapshot_totals(session)
    erase(server, console, how, user_id)
    with server.flask_app.extensions["tally"].sessions() as session:
        assert_totals_whole(session, totals)
    assert find_anywhere(engine, [OTHER])  # the bystander is kept
    return find_anywhere(engine, wanted)


@pytest.mark.parametrize("how", ["console", "cli"])
def test_nothing_they_wrote_anywhere_survives_the_erasure(tally, upstream, tally_admin, how):
    left = erase_and_scan(tally, upstream, tally_admin, how, "mobile-app")
    assert not left, "\n".join(left)


def test_a_bound_key_named_after_them_survives_no_erasure(tally, upstream, tally_admin):
    left = erase_and_scan(tally, upstream, tally_admin, "console", f"{NAME} {USER} phone")
    assert not left, "\n".join(left)
