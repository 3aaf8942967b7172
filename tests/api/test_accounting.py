"""Exact accounting on every path (non-stream, stream, client gone, upstream cut
mid-stream, upstream error) against the fake upstream: tokens, cached tokens, the cost
and where it came from (the upstream's ``usage.cost``, the price table, an estimate),
the daily totals row, and the figure the budget counters got. The price table is read
through the cache: a change shows on the next call, a change behind Tally's back within
a second, and calls do not query it."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import requests
from sqlalchemy import event, select, text

from tally.models import DailyTotal
from tally.proxy import call as proxy_call
from tally.usage.price_table import set_price
from tests.helpers.api import body_of, chat
from tests.helpers.payloads import (
    PRICED,
    RESPONSE_USAGE,
    chunks,
    completion,
    embedding_answer,
    response_events,
    response_object,
)
from tests.helpers.payloads import PRICED_MODEL as MODEL
from tests.helpers.payloads import PRICED_USAGE as USAGE
from tests.helpers.rows import configure, request_rows
from tests.helpers.waiting import wait_for


@pytest.fixture
def counted(monkeypatch):
    """The usage each finished call handed to the budget counters."""
    seen = []
    real = proxy_call.count_usage

    def spy(runtime, admission, usage):
        seen.append(usage)
        return real(runtime, admission, usage)

    monkeypatch.setattr(proxy_call, "count_usage", spy)
    return seen


def price(flask_app, model=MODEL, prompt=0.5, completion=2.0, cached=0.25):
    with flask_app.extensions["tally"].sessions() as session:
        set_price(session, model, prompt, completion, cached, "test")


def totals(flask_app) -> list[DailyTotal]:
    with flask_app.extensions["tally"].sessions() as session:
        return list(session.scalars(select(DailyTotal)))


def one_row(flask_app):
    [row] = wait_for(lambda: request_rows(flask_app))
    return row


def test_non_stream_with_the_upstreams_cost(tally, upstream, counted):
    price(tally.flask_app)  # the upstream's own figure wins over the table
    upstream.reply(json={**completion(), "usage": {**USAGE, "cost": 0.0123}})
    assert chat(tally, user="ada").status_code == 200
    row = one_row(tally.flask_app)
    assert (row.cost, row.cost_source, row.cached_tokens) == (0.0123, "upstream", 400)
    assert counted[-1]["cost"] == 0.0123
    [total] = totals(tally.flask_app)
    assert (total.requests, total.cost, total.cached_tokens) == (1, 0.0123, 400)
    assert total.prompt_tokens == 1000


def test_non_stream_priced_from_the_table_with_cached_tokens(tally, upstream, counted):
    price(tally.flask_app)
    upstream.reply(json={**completion(), "usage": USAGE})
    assert chat(tally, user="ada").status_code == 200
    row = one_row(tally.flask_app)
    assert row.cost_source == "price_table"
    assert row.cost == pytest.approx(PRICED) and PRICED == 0.0008
    assert (row.prompt_tokens, row.completion_tokens, row.cached_tokens) == (1000, 200, 400)
    assert counted[-1]["cost"] == row.cost  # the budgets count the same figure
    [total] = totals(tally.flask_app)
    assert (total.requests, total.errors, total.cached_tokens) == (1, 0, 400)
    assert total.cost == pytest.approx(PRICED)


def test_a_blank_cached_price_charges_cached_tokens_at_the_prompt_price(tally, upstream):
    price(tally.flask_app, cached=None)
    upstream.reply(json={**completion(), "usage": USAGE})
    chat(tally, user="ada")
    assert one_row(tally.flask_app).cost == pytest.approx((1000 * 0.5 + 200 * 2.0) / 1e6)


def test_the_price_of_the_model_asked_for_when_the_answered_one_has_none(tally, upstream):
    price(tally.flask_app, model="my-alias")
    upstream.reply(json={**completion(), "usage": USAGE})
    chat(tally, model="my-alias", user="ada")
    row = one_row(tally.flask_app)
    assert (row.model, row.cost_source) == (MODEL, "price_table")
    assert row.cost == pytest.approx(PRICED)


def test_no_cost_and_no_price_leaves_the_cost_unknown(tally, upstream, counted):
    upstream.reply(json={**completion(), "usage": USAGE})
    chat(tally, user="ada")
    row = one_row(tally.flask_app)
    assert (row.cost, row.cost_source, row.total_tokens) == (None, None, 1200)
    assert totals(tally.flask_app)[0].cost == 0.0


def test_stream_priced_from_the_table(tally, upstream, counted):
    price(tally.flask_app)
    upstream.reply(events=chunks(["Hi", "!"], usage=USAGE))
    body_of(chat(tally, stream=True, user="ada"))
    row = one_row(tally.flask_app)
    assert (row.stream, row.status, row.cost_source, row.cached_tokens) == (
        True,
        200,
        "price_table",
        400,
    )
    assert row.cost == pytest.approx(PRICED)
    assert counted[-1]["cost"] == row.cost
    assert totals(tally.flask_app)[0].cost == pytest.approx(PRICED)


def test_stream_with_the_upstreams_cost(tally, upstream):
    price(tally.flask_app)
    upstream.reply(events=chunks(["Hi"]))  # usage with cost 0.0007
    body_of(chat(tally, stream=True, user="ada"))
    row = one_row(tally.flask_app)
    assert (row.cost, row.cost_source) == (0.0007, "upstream")


def test_a_stream_cut_mid_way_is_estimated_until_the_upstream_says(tally, upstream, counted):
    price(tally.flask_app)
    upstream.reply(events=chunks(["partial"], usage=False)[:2], cut=True)
    body_of(chat(tally, stream=True, user="ada"))
    row = one_row(tally.flask_app)
    assert (row.status, row.generation_id, row.cost_source) == (502, "gen-fake-2", "estimated")
    # the prompt's 7 tokens ("user", "Hi there", the message's 4) and the two content
    # events relayed (the role chunk, "partial"), at $0.5 and $2 per million
    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (7, 2, 9)
    assert row.cost == pytest.approx(7.5e-06)
    assert counted[-1]["cost"] == row.cost  # the limits' counters took the estimate too
    assert row.reconcile_after is not None and row.reconcile_attempts == 0
    [total] = totals(tally.flask_app)
    assert (total.requests, total.errors, total.total_tokens) == (1, 1, 9)
    assert total.cost == pytest.approx(7.5e-06)


def test_a_cut_stream_outside_the_openrouter_dialect_is_estimated_for_good(tally, upstream):
    configure(tally.flask_app, dialect="compatible")
    upstream.reply(events=chunks(["partial"], usage=False)[:2], cut=True)
    body_of(chat(tally, stream=True, user="ada"))
    row = one_row(tally.flask_app)
    assert (row.status, row.cost, row.cost_source) == (502, None, "estimated")  # no price
    assert (row.total_tokens, row.reconcile_after) == (9, None)  # nothing will say better


def test_a_client_gone_mid_stream_is_estimated(tally, upstream):
    gate = threading.Event()
    many = chunks([f"w{i} " for i in range(200)])
    upstream.reply(events=[*many[:2], gate, *many[2:]], delay=0.005)
    _leave_mid_stream(tally)
    gate.set()
    row = one_row(tally.flask_app)
    assert (row.status, row.error_code) == (499, "client_disconnected")
    assert (row.cost_source, row.cost, row.generation_id) == ("estimated", None, "gen-fake-2")
    assert row.prompt_tokens == 6 and 1 <= row.completion_tokens < 200  # what was relayed
    [total] = wait_for(lambda: totals(tally.flask_app))
    assert (total.requests, total.errors) == (1, 1)


def test_an_upstream_error_costs_nothing(tally, upstream, counted):
    price(tally.flask_app)
    upstream.reply(status=503, json={"error": {"message": "overloaded", "code": 503}})
    assert chat(tally, user="ada").status_code == 503
    row = one_row(tally.flask_app)
    assert (row.status, row.cost, row.cost_source, row.prompt_tokens) == (503, None, None, None)
    [total] = totals(tally.flask_app)
    assert (total.requests, total.errors, total.cost) == (1, 1, 0.0)


def test_a_price_change_applies_to_the_next_call(tally, upstream):
    price(tally.flask_app)
    for _ in range(2):
        upstream.reply(json={**completion(), "usage": USAGE})
    chat(tally, user="ada")
    price(tally.flask_app, prompt=1.0, completion=4.0, cached=0.5)  # twice every price
    chat(tally, user="ada")
    rows = wait_for(
        lambda: len(request_rows(tally.flask_app)) == 2 and request_rows(tally.flask_app)
    )
    assert [r.cost for r in rows] == [pytest.approx(PRICED), pytest.approx(2 * PRICED)]


def test_a_change_made_behind_tallys_back_applies_within_a_second(tally, upstream):
    price(tally.flask_app)
    for _ in range(2):
        upstream.reply(json={**completion(), "usage": USAGE})
    chat(tally, user="ada")
    with tally.flask_app.extensions["tally"].engine.begin() as conn:  # no cache bump
        conn.execute(text("UPDATE model_prices SET prompt = 1.0, completion = 4.0, cached = 0.5"))
    time.sleep(1.05)
    chat(tally, user="ada")
    rows = wait_for(
        lambda: len(request_rows(tally.flask_app)) == 2 and request_rows(tally.flask_app)
    )
    assert rows[1].cost == pytest.approx(2 * PRICED)


def test_calls_do_not_query_the_price_table_each_time(tally, upstream):
    price(tally.flask_app)
    queries = []
    engine = tally.flask_app.extensions["tally"].engine

    def note(_conn, _cursor, statement, *_args):
        if "model_prices" in statement:
            queries.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    try:
        for _ in range(5):
            upstream.reply(json={**completion(), "usage": USAGE})
            chat(tally, user="ada")
    finally:
        event.remove(engine, "before_cursor_execute", note)
    assert len(queries) == 1
    assert all(r.cost_source == "price_table" for r in request_rows(tally.flask_app))


def post(tally, path: str, body: dict, stream: bool = False):
    """POST ``body`` to Tally's ``path``, the answer read to its end."""
    response = requests.post(
        f"{tally.url}{path}",
        json={**body, **({"stream": True} if stream else {})},
        headers={"Authorization": f"Bearer {tally.key}"},
        stream=stream,
        timeout=10,
    )
    body_of(response)
    return response


def test_responses_priced_from_the_table_with_cached_tokens(tally, upstream):
    price(tally.flask_app)
    usage = {k: v for k, v in RESPONSE_USAGE.items() if k != "cost"}  # 11 in (4 cached), 2 out
    upstream.reply(json={**response_object(), "usage": usage})
    post(tally, "/v1/responses", {"model": MODEL, "input": "Hi", "user": "ada"})
    row = one_row(tally.flask_app)
    assert (row.endpoint, row.cost_source, row.cached_tokens) == ("responses", "price_table", 4)
    assert row.cost == pytest.approx((7 * 0.5 + 4 * 0.25 + 2 * 2.0) / 1e6)


def test_a_responses_stream_cut_mid_way_is_estimated(tally, upstream):
    upstream.reply(events=response_events(["partial"], final=""), done=False, cut=True)
    post(tally, "/v1/responses", {"model": MODEL, "input": "Hi", "user": "ada"}, stream=True)
    row = one_row(tally.flask_app)
    assert (row.status, row.cost_source, row.cost) == (502, "estimated", None)
    assert row.generation_id == "resp_fake_1"


def test_embeddings_priced_from_the_table(tally, upstream):
    price(tally.flask_app, model="openai/text-embedding-3-small", prompt=0.02, completion=0.0)
    upstream.reply(json=embedding_answer())  # 5 prompt tokens, no cost
    post(tally, "/v1/embeddings", {"model": "openai/text-embedding-3-small", "input": "Hi"})
    row = one_row(tally.flask_app)
    assert (row.endpoint, row.cost_source) == ("embeddings", "price_table")
    assert row.cost == pytest.approx(5 * 0.02 / 1e6)


def _leave_mid_stream(tally) -> None:
    """Start a stream over a raw socket, read its first event, hang up."""
    host, port = tally.url.removeprefix("http://").split(":")
    payload = json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        | {"user": "leaver"}
    ).encode()
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {tally.key}\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    received = b""
    while b"data:" not in received:
        received += sock.recv(65536)
    sock.close()


def test_token_counts_no_column_can_hold_leave_the_row_recorded_with_them_unknown(tally, upstream):
    """An upstream's usage past a 64-bit integer (or a float past it): the row is kept,
    those counts unknown, instead of the batch failing and the row lost."""
    usage = {**USAGE, "prompt_tokens": 2**70, "completion_tokens": 1e30, "cost": 0.0123}
    upstream.reply(json={**completion(), "usage": usage})
    assert chat(tally, user="ada").status_code == 200
    row = one_row(tally.flask_app)
    assert (row.prompt_tokens, row.completion_tokens, row.cost) == (None, None, 0.0123)
    assert row.cached_tokens == 400
    [total] = totals(tally.flask_app)
    assert (total.requests, total.prompt_tokens, total.cost) == (1, 0, 0.0123)
