"""Every call refused once its key was accepted is a request row (PRODUCT.md, Limits:
"Refusals are visible"): a body that is not JSON or too large too, under the end user the
request names; many refused at once are as many rows and cost no quota, on the default
storage and on Redis, even once the counters are rebuilt from the log; and the usage the
admin API and the CLI export bill counts no refusal."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tally.db import utcnow
from tally.keys.admin_tokens import create_admin_token
from tests.helpers.api import BASE, chat
from tests.helpers.limits import forget_counters, forget_redis_counters, set_limits
from tests.helpers.rows import end_users, identifiers, only_refusal, request_rows

REDIS_URL = os.environ.get("TALLY_TEST_REDIS_URL")
BURST = 20


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        (b"{not json", 400, None),  # the row's code is then the error's type
        (json.dumps({**BASE, "pad": "x" * 70_000}), 413, "request_too_large"),
    ],
    ids=["not JSON", "too large"],
)
def test_a_body_that_cannot_be_read_is_a_refused_row_of_the_header_user(
    tally, upstream, payload, status, code
):
    response = chat(tally, payload, headers={"X-Tally-User": "hdr-user"})
    assert response.status_code == status
    error = response.json()["error"]
    assert (error["code"], error["type"]) == (code, "invalid_request_error")
    assert response.headers["X-RateLimit-Limit"] == "1000"  # the user's quota, untouched
    assert response.headers["X-RateLimit-Remaining"] == "1000"
    row = only_refusal(tally.flask_app, response, status, code or "invalid_request_error")
    assert (row.user.external_id, row.model, row.stream) == ("hdr-user", None, False)
    assert upstream.requests == [] and identifiers(tally.flask_app) == []
    served = chat(tally, headers={"X-Tally-User": "hdr-user"})
    assert served.headers["X-RateLimit-Remaining"] == "999"


def test_a_refusal_keeps_no_profile_and_sends_no_identifier(tally, upstream):
    set_limits(tally.flask_app, "key:web", "messages=1")
    assert chat(tally, user="first").status_code == 200
    profile = {"id": "newcomer", "display_name": "Nina", "email": "nina@example.com"}
    refused = chat(tally, identity=profile, stream=True)
    assert (refused.status_code, refused.json()["error"]["code"]) == (429, "rate_limit_exceeded")
    row = only_refusal_of(tally, refused)
    assert (row.status, row.error_code, row.stream) == (429, "rate_limit_exceeded", True)
    assert row.error_message == refused.json()["error"]["message"]
    assert row.error_message.startswith("The message quota of 1 requests per rolling 24 hours")
    [newcomer] = [u for u in end_users(tally.flask_app) if u.external_id == "newcomer"]
    assert (newcomer.display_name, newcomer.email) == (None, None)
    assert [i.user.external_id for i in identifiers(tally.flask_app)] == ["first"]
    assert len(upstream.requests) == 1


def only_refusal_of(tally, response):
    """The row of the refusal ``response`` answered (others may be in the log)."""
    [row] = [r for r in request_rows(tally.flask_app) if r.request_id == request_id(response)]
    assert row.refused and row.identifier_id is None
    assert (row.total_tokens, row.cost) == (None, None)
    return row


def request_id(response) -> str:
    """The X-Request-Id an answer carries (its row's ``request_id``)."""
    return response.headers["X-Request-Id"]


@pytest.fixture(params=["memory", "redis"])
def limited(request, make_app, upstream, serve):
    """Tally over HTTP on the default storage, or on Redis when the run has one."""
    overrides = {}
    if request.param == "redis":
        if not REDIS_URL:
            pytest.skip("needs TALLY_TEST_REDIS_URL")
        overrides["TALLY_RATELIMIT_STORAGE_URI"] = REDIS_URL
    flask_app = make_app(TALLY_UPSTREAM_URL=upstream.url, **overrides)
    forget_counters(flask_app)
    server = serve(flask_app)
    from tally.keys.api_keys import create_api_key

    with flask_app.extensions["tally"].sessions() as session:
        _, server.key = create_api_key(session, "web", "test")
    server.flask_app, server.on_redis = flask_app, request.param == "redis"
    yield server
    if server.on_redis:
        forget_redis_counters(REDIS_URL)


def lose_counters(server) -> None:
    """As after a restart of the limit storage: the counters come back from the log."""
    if server.on_redis:
        forget_redis_counters(REDIS_URL)
    else:
        forget_counters(server.flask_app)
    server.flask_app.extensions["tally"].limits.ready.clear()


@pytest.mark.parametrize("restart", [False, True], ids=["kept counters", "rebuilt counters"])
def test_refusals_at_once_are_as_many_rows_and_cost_no_quota(limited, upstream, restart):
    set_limits(limited.flask_app, "tier:default", "messages=2")
    assert chat(limited, user="crowd").headers["X-RateLimit-Remaining"] == "1"
    assert chat(limited, user="crowd").headers["X-RateLimit-Remaining"] == "0"
    with ThreadPoolExecutor(max_workers=BURST) as pool:
        answers = list(pool.map(lambda _: chat(limited, user="crowd"), range(BURST)))
    assert [a.status_code for a in answers] == [429] * BURST
    rows = request_rows(limited.flask_app)
    refused = [r for r in rows if r.refused]
    assert len(rows) == 2 + BURST and len(refused) == BURST
    assert {r.request_id for r in refused} == {request_id(a) for a in answers}
    assert {(r.status, r.error_code, r.user.external_id) for r in refused} == {
        (429, "rate_limit_exceeded", "crowd")
    }
    if restart:
        lose_counters(limited)
    set_limits(limited.flask_app, "tier:default", "messages=3")  # room for one more call
    if limited.on_redis:
        time.sleep(1.1)  # a policy change applies within 1 s (PRODUCT.md); on Redis it may take it
    after = chat(limited, user="crowd")
    assert (after.status_code, after.headers["X-RateLimit-Remaining"]) == (200, "0")
    assert chat(limited, user="crowd").status_code == 429
    assert len(upstream.requests) == 3


@pytest.fixture
def billed(tally, upstream):
    """Two calls served to "payer", then refusals: the key's limit for payer and for
    "stranger" (refused only), and a bad body naming a model nobody was served."""
    for _ in range(2):
        assert chat(tally, user="payer").status_code == 200
    set_limits(tally.flask_app, "key:web", "messages=2")
    assert [chat(tally, user=u).status_code for u in ("payer", "stranger")] == [429, 429]
    bad = {"model": "never-served", "messages": [], "user": "stranger"}
    assert chat(tally, bad).status_code == 400
    assert sum(r.refused for r in request_rows(tally.flask_app)) == 3
    return utcnow().date().isoformat()


def test_the_admin_api_bills_no_refusal(tally, billed):
    with tally.flask_app.extensions["tally"].sessions() as session:
        _, token = create_admin_token(session, "bi", "test")
    found = {}
    for group_by in ("user", "model", "day", "endpoint", "key"):
        response = requests.get(
            f"{tally.url}/admin/api/usage",
            params={"from": billed, "to": billed, "group_by": group_by},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        found[group_by] = [(r[next(iter(r))], r["requests"]) for r in response.json()["rows"]]
    assert found == {
        "user": [("payer", 2)],  # stranger, refused alone, is no row
        "model": [(BASE["model"], 2)],  # nor the model only a refusal named
        "day": [(billed, 2)],
        "endpoint": [("chat.completions", 2)],
        "key": [("web", 2)],
    }


@pytest.mark.parametrize("group_by", ["user", "model", "tag"])
def test_the_export_bills_no_refusal(tally, billed, group_by):
    args = ["usage", "export", "--from", billed, "--to", billed, "--group-by", group_by]
    result = tally.flask_app.test_cli_runner().invoke(args=[*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["rows"]
    assert [row["requests"] for row in rows] == [2]
    assert rows[0][{"user": "internal_id", "model": "model", "tag": "tag"}[group_by]] in (
        "payer",
        BASE["model"],
        None,
    )
