"""The request log (PRODUCT.md, Console: ``/requests`` and ``/requests/<request id>``):
every call answered or refused, newest first, each filter alone and combined, a cursor
through older pages that neither repeats nor skips a row, one call's detail, and bad
filters answered with a form message."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from sqlalchemy import event, select

from tally.keys.api_keys import create_api_key
from tally.models import AuditEntry, RequestLog
from tally.reports.requests import parse_filter, request_log
from tests.helpers.api import chat, embed, respond
from tests.helpers.console import text
from tests.helpers.limits import set_limits
from tests.helpers.rows import end_users, record_traffic, request_rows

CURSOR = "20261120T120000.000000-5"  # a page's "older" cursor
ROW = re.compile(r'<tr data-request-id="([^"]+)">(.*?)</tr>', re.S)


@pytest.fixture
def traffic(tally, upstream):
    """Calls of three kinds by ada and bob: served, an upstream error, refused (quota and
    a bad body), on chat, Responses and embeddings; the answers' request ids by name."""
    ids = {}
    ids["ada_chat"] = chat(tally, user="ada").headers["X-Request-Id"]
    ids["bob_embed"] = embed(tally, user="bob").headers["X-Request-Id"]
    ids["bob_respond"] = respond(tally, user="bob").headers["X-Request-Id"]
    upstream.reply(status=500, json={"error": {"message": "upstream broke"}})
    ids["ada_error"] = chat(tally, user="ada").headers["X-Request-Id"]
    set_limits(tally.flask_app, "user:ada", "messages=2")
    refused = chat(tally, user="ada")
    assert refused.status_code == 429
    ids["ada_quota"] = refused.headers["X-Request-Id"]
    bad = chat(tally, {"model": "m", "messages": [], "user": "bob"})
    assert bad.status_code == 400
    ids["bob_bad"] = bad.headers["X-Request-Id"]
    tally.ids = ids
    return tally


def rows_of(response) -> list[str]:
    """The request ids of the log's rows, top to bottom."""
    assert response.status_code == 200, text(response)
    return [request_id for request_id, _cells in ROW.findall(text(response))]


def cells_of(response, request_id: str) -> dict[str, str]:
    """One row's cells by their label, as text."""
    [cells] = [cells for rid, cells in ROW.findall(text(response)) if rid == request_id]
    found = re.findall(r'<td[^>]*data-label="([^"]+)">(.*?)</td>', cells, re.S)
    return {label: re.sub(r"<[^>]+>", "", value).strip() for label, value in found}


def test_every_call_is_listed_newest_first_with_what_it_was(tally_admin, traffic):
    ids = traffic.ids
    page = tally_admin.get("/requests")
    order = ["bob_bad", "ada_quota", "ada_error", "bob_respond", "bob_embed", "ada_chat"]
    assert rows_of(page) == [ids[name] for name in order]
    served = cells_of(page, ids["ada_chat"])
    assert served["End user"] == "ada"
    assert (served["Key"], served["Endpoint"], served["Status"]) == (
        "web",
        "chat.completions",
        "200",
    )
    assert served["Model"] == "openai/gpt-4o-mini"
    [row] = [r for r in request_rows(traffic.flask_app) if r.request_id == ids["ada_chat"]]
    assert served["Tokens"] == f"{row.total_tokens:,}" and served["Latency"].endswith(" ms")
    assert cells_of(page, ids["bob_embed"])["Endpoint"] == "embeddings"
    assert cells_of(page, ids["bob_respond"])["Endpoint"] == "responses"
    quota = cells_of(page, ids["ada_quota"])
    assert quota["Status"] == "429 rate_limit_exceeded refused"
    assert (quota["Tokens"], quota["Cost"]) == ("–", "–")
    assert cells_of(page, ids["ada_error"])["Status"].startswith("500")
    assert "refused" not in cells_of(page, ids["ada_error"])["Status"]
    # each row links to its call's page
    assert f'href="/requests/{ids["ada_chat"]}"' in text(page)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=ok", ["bob_respond", "bob_embed", "ada_chat"]),
        ("status=error", ["ada_error"]),
        ("status=refused", ["bob_bad", "ada_quota"]),
        ("user=ada", ["ada_quota", "ada_error", "ada_chat"]),
        ("user=bob&status=refused", ["bob_bad"]),
        ("endpoint=embeddings", ["bob_embed"]),
        ("endpoint=responses&user=bob", ["bob_respond"]),
        ("endpoint=chat&status=ok", ["ada_chat"]),
        ("key=web&user=ada&status=ok", ["ada_chat"]),
        ("model=nothing-like-it", []),
    ],
)
def test_filters_narrow_the_log_alone_and_combined(tally_admin, traffic, query, expected):
    assert rows_of(tally_admin.get(f"/requests?{query}")) == [traffic.ids[n] for n in expected]


def test_the_model_filter_matches_the_model_recorded(tally_admin, traffic):
    rows = request_rows(traffic.flask_app)
    [embedded] = [r for r in rows if r.request_id == traffic.ids["bob_embed"]]
    same = [r.request_id for r in reversed(rows) if r.model == embedded.model]
    assert rows_of(tally_admin.get(f"/requests?model={embedded.model}")) == same
    assert rows_of(tally_admin.get(f"/requests?model={embedded.model}&endpoint=embeddings")) == [
        embedded.request_id
    ]


def test_a_user_is_found_by_an_upstream_identifier_and_the_lookup_is_audited(tally_admin, traffic):
    [row] = [r for r in request_rows(traffic.flask_app) if r.request_id == traffic.ids["ada_chat"]]
    identifier = row.identifier.identifier
    page = tally_admin.get(f"/requests?user={identifier}")
    assert len(rows_of(page)) == 3 and all(
        cells_of(page, rid)["End user"] == "ada" for rid in rows_of(page)
    )
    assert '<code class="internal-id">ada</code>' in text(page)  # the heading names her
    with traffic.flask_app.extensions["tally"].sessions() as session:
        entry = session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())).first()
    assert (entry.action, entry.target, entry.actor) == (
        "identity.lookup",
        identifier,
        tally_admin.email,
    )
    assert entry.after == {"request_log": identifier, "results": 1}


def test_unknown_names_say_why_the_log_is_empty(tally_admin, traffic):
    assert "No end user has the internal id or upstream identifier <code>zed</code>." in text(
        tally_admin.get("/requests?user=zed")
    )
    assert "No API key is named <code>mobile</code>." in text(
        tally_admin.get("/requests?key=mobile")
    )
    assert "No calls match these filters." in text(
        tally_admin.get("/requests?status=ok&from=2001-01-01&to=2001-01-02")
    )


def test_a_call_shows_everything_known_about_it(tally_admin, traffic):
    ids = traffic.ids
    [row] = [r for r in request_rows(traffic.flask_app) if r.request_id == ids["ada_chat"]]
    page = text(tally_admin.get(f"/requests/{ids['ada_chat']}"))
    facts = dict(
        (dt, " ".join(re.sub(r"<[^>]+>", " ", dd).split()))
        for dt, dd in re.findall(r"<dt>([^<]+)</dt><dd[^>]*>(.*?)</dd>", page, re.S)
    )
    assert facts["End user"] == "ada"
    assert facts["Identifier sent"] == row.identifier.identifier
    assert facts["Config revision"].startswith(f"{row.identifier.revision_id} hmac-sha256")
    assert (facts["API key"], facts["Endpoint"], facts["Model"]) == (
        "web",
        "chat.completions",
        "openai/gpt-4o-mini",
    )
    assert facts["Status"] == "200" and facts["Code"] == "–"
    assert facts["Prompt tokens"] == f"{row.prompt_tokens:,}"
    assert facts["Completion tokens"] == f"{row.completion_tokens:,}"
    assert facts["Cost source"].startswith(row.cost_source or "–")
    assert facts["Latency"].endswith(" ms")
    assert facts["Generation id"] == (row.generation_id or "–")
    refused = text(tally_admin.get(f"/requests/{ids['ada_quota']}"))
    assert "<code>rate_limit_exceeded</code>" in refused
    assert "(refused: nothing was sent)" in refused
    assert tally_admin.get("/requests/no-such-call").status_code == 404
    assert tally_admin.get("/requests/" + "x" * 300).status_code == 404


def test_a_users_page_links_to_their_log(tally_admin, traffic):
    [ada] = [u for u in end_users(traffic.flask_app) if u.external_id == "ada"]
    page = text(tally_admin.get(f"/identities/{ada.id}"))
    assert 'href="/requests?user=ada"' in page


@pytest.fixture
def many(app):
    """125 calls for carol, three of them in one microsecond (ties broken by id)."""
    base = datetime(2026, 11, 20, 12, 0, 0)
    calls = [
        {"when": base + timedelta(seconds=n), "user": "carol", "tokens": n} for n in range(122)
    ]
    tie = base + timedelta(seconds=60, microseconds=500)
    calls += [{"when": tie, "user": "carol", "tokens": 1000 + n} for n in range(3)]
    with app.extensions["tally"].sessions() as session:
        record_traffic(session, calls)
        session.commit()
    return app


def test_the_older_link_pages_through_every_row_once(admin, many):
    seen, url = [], "/requests?user=carol"
    while url:
        page = admin.get(url)
        ids = rows_of(page)
        assert len(ids) <= 50
        seen += ids
        older = re.search(r'<a rel="next" href="([^"]+)"', text(page))
        url = older.group(1).replace("&amp;", "&") if older else None
    assert len(seen) == 125 and len(set(seen)) == 125
    with many.extensions["tally"].sessions() as session:
        newest_first = session.scalars(
            select(RequestLog.request_id).order_by(
                RequestLog.created_at.desc(), RequestLog.id.desc()
            )
        ).all()
    assert seen == newest_first


def test_dates_are_utc_days_and_inclusive(admin, many):
    assert len(rows_of(admin.get("/requests?from=2026-11-20&to=2026-11-20"))) == 50
    assert rows_of(admin.get("/requests?to=2026-11-19")) == []
    assert rows_of(admin.get("/requests?from=2026-11-21")) == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("from=2026-13-01", "from must be a date written YYYY-MM-DD"),
        ("to=yesterday", "to must be a date written YYYY-MM-DD"),
        ("from=2026-11-21&to=2026-11-20", "from must be on or before to"),
        ("status=maybe", "status must be one of ok, error, refused"),
        ("endpoint=completions", "endpoint must be one of chat, responses, embeddings"),
        ("before=20261120T120000.000000-99999999999999999999", "before must be the cursor"),
        ("before=%ED%A0%80", "before must be the cursor"),
        ("user=" + "u" * 256, "user is at most 255 characters"),
    ],
)
def test_a_bad_filter_gets_a_form_message(admin, many, query, message):
    for htmx in (False, True):
        response = admin.get(f"/requests?{query}", htmx=htmx)
        assert response.status_code == 422
        assert message in text(response)
        assert ("<h1>Requests</h1>" in text(response)) is not htmx


def test_hostile_bytes_in_a_filter_are_refused_or_matched_never_a_500(admin, many):
    assert admin.get("/requests?user=a%00b").status_code == 400
    for value in ("%ED%A0%80", "%F0%9F%98%80", "'%20OR%201=1--", "%25", "_"):
        response = admin.get(f"/requests?user={value}&model={value}")
        assert response.status_code == 200 and rows_of(response) == []


def test_support_reads_the_log_and_nobody_logged_out_does(app, support, many):
    assert len(rows_of(support.get("/requests"))) == 50
    anonymous = app.test_client().get("/requests")
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]
    assert app.test_client().get("/requests/abc").status_code == 302


@pytest.mark.parametrize(
    ("args", "index"),
    [
        ({"user": "carol"}, "ix_request_log_user_created"),
        ({"key": "web"}, "ix_request_log_api_key_id_created"),
        ({"model": "m"}, "ix_request_log_model_created"),
        ({"endpoint": "embeddings"}, "ix_request_log_endpoint_created"),
        ({"status": "refused"}, "ix_request_log_refused_created"),
        ({"status": "error", "before": CURSOR}, "ix_request_log_errors_created"),
        ({"user": "carol", "status": "error"}, "ix_request_log_user_errors_created"),
        ({"user": "carol", "status": "refused"}, "ix_request_log_user_refused_created"),
        ({"before": CURSOR}, "ix_request_log_created_at"),
        ({}, "ix_request_log_created_at"),
    ],
)
def test_each_filter_reads_its_index_newest_first(many, database_url, args, index):
    """The log's own query is read off an index, in order, with no sort of the matches: a
    million rows cost what fifty do. SQLite's plan as it comes; PostgreSQL's with scans
    and sorts of the whole matches priced out (its planner weighs a test's few rows), which
    shows that the query's conditions prove the partial indexes apply."""
    runtime = many.extensions["tally"]
    with runtime.sessions() as session:
        create_api_key(session, "web", "test")
    statements = []

    def capture(_conn, _cursor, statement, parameters, _context, _many):
        if "FROM request_log" in statement and "ORDER BY" in statement:
            statements.append((statement, parameters))

    postgres = not database_url.startswith("sqlite")
    event.listen(runtime.engine, "before_cursor_execute", capture)
    try:
        with runtime.sessions() as session:
            request_log(session, parse_filter(args))
            [(statement, parameters)] = statements
            connection = session.connection()
            if postgres:
                for setting in ("seqscan", "bitmapscan", "sort"):
                    connection.exec_driver_sql(f"SET LOCAL enable_{setting} = off")
            explain = "EXPLAIN " if postgres else "EXPLAIN QUERY PLAN "
            plan = " | ".join(
                row[-1] for row in connection.exec_driver_sql(explain + statement, parameters)
            )
    finally:
        event.remove(runtime.engine, "before_cursor_execute", capture)
    if postgres:
        assert f"Index Scan Backward using {index} on request_log" in plan, plan
        # ties of one created_at put in id order as they come (ix_request_log_created_at
        # has no id), never every match sorted
        assert not re.search(r"(?<!Incremental )Sort  \(", plan), plan
        return
    assert f"USING INDEX {index}" in plan or f"USING COVERING INDEX {index}" in plan, plan
    assert "TEMP B-TREE" not in plan, plan
    if "before" in args:  # the cursor bounds the index range: a deep page starts there
        assert "created_at<" in plan, plan


@pytest.mark.parametrize(
    "page",
    [
        "/",
        "/identities",
        "/identities?q=ad",
        "/identities?sort=cost",
        "/usage",
        "/usage?group_by=user",
    ],
)
def test_every_per_user_row_links_to_that_users_log(tally_admin, traffic, page):
    """The dashboard's top users, the users table and search, the usage page's top users
    and its breakdown by user: each row links to that user's calls in the request log."""
    assert 'href="/requests?user=ada"' in text(tally_admin.get(page))
