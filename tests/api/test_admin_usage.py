"""The admin API over real HTTP: ``GET /admin/api/usage`` with an admin API token —
exact rows, the ``next`` chain of pages, 401 for anything but an active admin token,
400 for bad parameters, ``last_used_at`` touched at most once a minute."""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import select

from tally.db import utcnow
from tally.end_users.claims import EndUserClaim
from tally.keys.admin_tokens import create_admin_token, revoke_admin_token
from tally.models import AdminToken
from tally.usage.call import CallRecord, Outcome
from tally.usage.records import record_calls

DAY1 = datetime(2026, 11, 2, 9, 30)
DAY2 = DAY1 + timedelta(days=1)
RANGE = {"from": "2026-11-01", "to": "2026-11-05"}
USERS = ["u-alice", "u-bob", "u-cy", "u-dee", "u-eve"]
ERROR_KEYS = {"message", "type", "param", "code"}


def _record(user, model, when, prompt, completion, cached, cost, n):
    call = CallRecord(f"r-{user}-{n}", None, EndUserClaim(user, "user"), None, None, model, False)
    usage = {"prompt_tokens": prompt, "completion_tokens": completion}
    usage |= {"cached_tokens": cached, "cost": cost, "total_tokens": prompt + completion}
    return call, Outcome(usage=usage), when


@pytest.fixture
def workload(tally):
    """Five users; two models; two days; one call outside the range."""
    batch = []
    for n, user in enumerate(USERS):
        batch.append(_record(user, "m-small", DAY1, 100, 10, 40, 0.25, 1))
        batch.append(_record(user, "m-large", DAY2, 200 + n, 20, 0, 1.5, 2))
    batch.append(_record("u-alice", "m-small", datetime(2026, 10, 1), 9, 9, 9, 9.0, 3))
    with tally.flask_app.extensions["tally"].sessions() as session:
        record_calls(session, batch)


@pytest.fixture
def make_token(tally):
    """Factory: an admin API token's secret (``revoked``: revoked at once)."""

    def factory(name: str = "bi", revoked: bool = False) -> str:
        with tally.flask_app.extensions["tally"].sessions() as session:
            token, raw = create_admin_token(session, name, "test")
            if revoked:
                revoke_admin_token(session, token, "test")
        return raw

    return factory


def usage(tally, token: str | None, **params):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(f"{tally.url}/admin/api/usage", params=params, headers=headers, timeout=10)


def test_rows_by_model_are_exact(tally, workload, make_token):
    response = usage(tally, make_token(), group_by="model", **RANGE)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {
        "rows": [
            {
                "model": "m-large",
                "requests": 5,
                "prompt_tokens": 1010,
                "completion_tokens": 100,
                "cached_tokens": 0,
                "cost_usd": 7.5,
            },
            {
                "model": "m-small",
                "requests": 5,
                "prompt_tokens": 500,
                "completion_tokens": 50,
                "cached_tokens": 200,
                "cost_usd": 1.25,
            },
        ]
    }


def test_rows_by_day_and_by_user(tally, workload, make_token):
    token = make_token()
    days = usage(tally, token, group_by="day", **RANGE).json()["rows"]
    assert [(r["day"], r["requests"], r["cost_usd"]) for r in days] == [
        ("2026-11-02", 5, 1.25),
        ("2026-11-03", 5, 7.5),
    ]
    users = usage(tally, token, group_by="user", **RANGE).json()["rows"]
    assert users[0] == {
        "internal_id": "u-alice",
        "display_name": None,
        "requests": 2,
        "prompt_tokens": 300,
        "completion_tokens": 30,
        "cached_tokens": 40,
        "cost_usd": 1.75,
    }
    assert [r["internal_id"] for r in users] == USERS


def test_next_links_page_through_every_row(tally, workload, make_token):
    token = make_token()
    everything = usage(tally, token, group_by="user", **RANGE).json()
    assert "next" not in everything
    pages, url, params = [], f"{tally.url}/admin/api/usage", {"group_by": "user", "limit": 2}
    params |= RANGE
    while url:
        body = requests.get(
            url, params=params, headers={"Authorization": f"Bearer {token}"}, timeout=10
        ).json()
        pages.append(body["rows"])
        url, params = body.get("next"), None
        if url:
            assert url.startswith(f"{tally.url}/admin/api/usage?")
            query = parse_qs(urlsplit(url).query)
            assert query["group_by"] == ["user"] and query["limit"] == ["2"]
            assert (query["from"], query["to"]) == (["2026-11-01"], ["2026-11-05"])
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [row for page in pages for row in page] == everything["rows"]


def test_paging_past_the_anonymous_row_reaches_every_user(tally, workload, make_token):
    """Anonymous traffic is the row with a null key, first; its cursor is "" and the
    next page starts after it (not with it again)."""
    call = CallRecord("r-anon", None, None, None, None, "m-small", False)
    with tally.flask_app.extensions["tally"].sessions() as session:
        record_calls(session, [(call, Outcome(usage={"prompt_tokens": 1}), DAY1)])
    token, url = make_token(), f"{tally.url}/admin/api/usage"
    params, seen = {"group_by": "user", "limit": 1, **RANGE}, []
    for _ in range(10):  # 6 pages at most: a cursor that loops fails here
        body = requests.get(
            url, params=params, headers={"Authorization": f"Bearer {token}"}, timeout=10
        ).json()
        seen += [row["internal_id"] for row in body["rows"]]
        if "next" not in body:
            break
        url, params = body["next"], None
    assert seen == [None, *USERS]


def test_a_last_full_page_has_no_next(tally, workload, make_token):
    body = usage(tally, make_token(), group_by="model", limit=2, **RANGE).json()
    assert len(body["rows"]) == 2 and "next" not in body


def test_default_range_is_the_last_30_days(tally, make_token):
    today = utcnow().replace(hour=0, minute=5)
    batch = [
        _record("u-now", "m-now", today, 1, 1, 0, 0.5, 1),
        _record("u-now", "m-now", today - timedelta(days=29), 1, 1, 0, 0.5, 2),
        _record("u-now", "m-old", today - timedelta(days=30), 1, 1, 0, 0.5, 3),
    ]
    with tally.flask_app.extensions["tally"].sessions() as session:
        record_calls(session, batch)
    rows = usage(tally, make_token(), group_by="model").json()["rows"]
    assert [(row["model"], row["requests"]) for row in rows] == [("m-now", 2)]


def _assert_openai_error(response, status: int, message: str, code=None, param=None):
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == ERROR_KEYS
    assert message in error["message"]
    assert error["type"] == "invalid_request_error"
    assert (error["code"], error["param"]) == (code, param)


def test_missing_token_is_401(tally, workload):
    response = usage(tally, None, group_by="model")
    _assert_openai_error(response, 401, "Missing admin API token", "invalid_api_key")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="tally"'


def test_a_gateway_api_key_is_401(tally, workload):
    response = usage(tally, tally.key, group_by="model")
    _assert_openai_error(response, 401, "This is a gateway API key", "invalid_api_key")
    assert "rows" not in response.text


@pytest.mark.parametrize("token", ["tadm_not-a-real-token", "sk-something", "x"])
def test_an_unknown_token_is_401(tally, workload, token):
    response = usage(tally, token, group_by="model")
    _assert_openai_error(response, 401, "Incorrect or revoked admin API token.", "invalid_api_key")


def test_a_revoked_token_is_401(tally, workload, make_token):
    response = usage(tally, make_token("old", revoked=True), group_by="model")
    _assert_openai_error(response, 401, "Incorrect or revoked admin API token.", "invalid_api_key")


@pytest.mark.parametrize(
    "params,message,param",
    [
        ({"group_by": "model", "from": "2026-13-01"}, "'from' must be a date", "from"),
        ({"group_by": "model", "to": "yesterday"}, "'to' must be a date", "to"),
        ({"group_by": "model", "from": "20261101"}, "'from' must be a date", "from"),
        (
            {"group_by": "model", "from": "2026-11-05", "to": "2026-11-01"},
            "'from' must be on or before 'to'.",
            "from",
        ),
        (
            {},
            "group_by must be one of user, model, endpoint, day, tag, key, metadata:KEY",
            "group_by",
        ),
        ({"group_by": "colour"}, "got 'colour'", "group_by"),
        ({"group_by": "model", "limit": "0"}, "'limit' must be a whole number", "limit"),
        ({"group_by": "model", "limit": "10001"}, "from 1 to 10000", "limit"),
        ({"group_by": "model", "limit": "ten"}, "'limit' must be a whole number", "limit"),
    ],
)
def test_bad_parameters_are_400(tally, make_token, params, message, param):
    response = usage(tally, make_token(), **params)
    _assert_openai_error(response, 400, message, param=param)


def test_other_methods_and_paths_answer_in_openai_shape(tally, make_token):
    token = make_token()
    headers = {"Authorization": f"Bearer {token}"}
    posted = requests.post(f"{tally.url}/admin/api/usage", headers=headers, timeout=10)
    assert posted.status_code == 405 and set(posted.json()["error"]) == ERROR_KEYS
    missing = requests.get(f"{tally.url}/admin/api/nothing", headers=headers, timeout=10)
    assert missing.status_code == 404 and set(missing.json()["error"]) == ERROR_KEYS
    assert "Set-Cookie" not in posted.headers  # the lean app: no session, no CSRF


def test_last_use_is_written_at_most_once_a_minute(tally, make_token):
    token = make_token()
    sessions = tally.flask_app.extensions["tally"].sessions

    def last_used():
        with sessions() as session:
            return session.scalars(select(AdminToken.last_used_at)).one()

    assert last_used() is None
    assert usage(tally, token, group_by="model").status_code == 200
    first = last_used()
    assert first is not None
    assert usage(tally, token, group_by="model").status_code == 200
    assert last_used() == first  # within the minute: no write
    with sessions() as session:
        session.scalars(select(AdminToken)).one().last_used_at = first - timedelta(minutes=2)
        session.commit()
    assert usage(tally, token, group_by="model").status_code == 200
    assert last_used() > first - timedelta(minutes=2)
