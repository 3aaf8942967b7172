"""Streamed calls, row by row: whether or not the client asked for usage
(``stream_options.include_usage``), and on the Responses API, the stored request row
holds the call's prompt, completion and cached tokens, its cost and where the cost came
from, its status; the daily totals agree; and the client got the usage chunk exactly
when it asked for it."""

from __future__ import annotations

import pytest
import requests
from sqlalchemy import select

from tally.models import DailyTotal
from tally.usage.price_table import set_price
from tests.helpers.api import chat
from tests.helpers.payloads import PRICED, RESPONSE_USAGE, chunks, response_events, sse
from tests.helpers.payloads import PRICED_MODEL as MODEL
from tests.helpers.payloads import PRICED_USAGE as USAGE
from tests.helpers.rows import request_rows
from tests.helpers.waiting import wait_for

# what the upstream reports -> (its usage, the row's cost, the row's cost source)
COSTS = {
    "the upstream's cost": ({**USAGE, "cost": 0.0123}, 0.0123, "upstream"),
    "the price table's": (USAGE, PRICED, "price_table"),
}
# the client's stream_options -> whether it asked for the usage chunk
ASKED = {
    "usage asked for": ({"include_usage": True}, True),
    "no stream_options": (None, False),
    "usage declined": ({"include_usage": False}, False),
}


@pytest.fixture
def priced(tally):
    """The model has a price, so a call without the upstream's cost is priced."""
    with tally.flask_app.extensions["tally"].sessions() as session:
        set_price(session, MODEL, 0.5, 2.0, 0.25, "test")


def body_of(response) -> bytes:
    """The whole answer, read as it streams."""
    return b"".join(response.iter_content(chunk_size=None))


def one_row(flask_app):
    """The one request row (written when the stream ended)."""
    [row] = wait_for(lambda: request_rows(flask_app))
    return row


def day_total(flask_app) -> DailyTotal:
    """The one daily totals row."""
    with flask_app.extensions["tally"].sessions() as session:
        [total] = session.scalars(select(DailyTotal)).all()
        return total


def assert_row(row, endpoint, tokens, cost, source, generation_id):
    """The row of a streamed call that ended well, with its tokens and cost."""
    assert (row.endpoint, row.stream, row.status, row.error_code) == (endpoint, True, 200, None)
    assert (row.prompt_tokens, row.completion_tokens, row.cached_tokens) == tokens
    assert row.total_tokens == tokens[0] + tokens[1]
    assert row.cost == pytest.approx(cost)
    assert (row.cost_source, row.generation_id, row.model) == (source, generation_id, MODEL)
    assert 0 < row.ttft_ms <= row.latency_ms


@pytest.mark.parametrize("asked", ASKED)
@pytest.mark.parametrize("reported", COSTS)
def test_a_chat_stream_is_one_full_row_whether_usage_was_asked_for_or_not(
    tally, upstream, priced, asked, reported
):
    options, wants_usage = ASKED[asked]
    usage, cost, source = COSTS[reported]
    events = chunks(["Hel", "lo", "!"], usage=usage)
    upstream.reply(events=events)
    extra = {"stream_options": options} if options is not None else {}
    response = chat(tally, stream=True, user="ada", **extra)
    received = body_of(response)
    assert response.status_code == 200
    assert received == sse(events if wants_usage else events[:-1])
    assert (b'"usage"' in received) is wants_usage
    assert upstream.last.body["stream_options"]["include_usage"] is True  # always asked for
    row = one_row(tally.flask_app)
    assert row.request_id == response.headers["X-Request-Id"]
    assert_row(row, "chat.completions", (1000, 200, 400), cost, source, "gen-fake-2")
    total = day_total(tally.flask_app)
    assert (total.requests, total.prompt_tokens, total.completion_tokens) == (1, 1000, 200)
    assert (total.cached_tokens, total.cost) == (400, pytest.approx(cost))


def respond_streamed(server) -> requests.Response:
    """A streamed Responses API call for ``ada``."""
    body = {"model": MODEL, "input": "Hi there", "user": "ada", "stream": True}
    headers = {"Authorization": f"Bearer {server.key}"}
    return requests.post(
        f"{server.url}/v1/responses", json=body, headers=headers, stream=True, timeout=10
    )


@pytest.mark.parametrize("reported", [True, False], ids=["the upstream's cost", "priced"])
def test_a_responses_stream_is_one_full_row_from_its_final_event(tally, upstream, priced, reported):
    usage = RESPONSE_USAGE if reported else {k: v for k, v in RESPONSE_USAGE.items() if k != "cost"}
    events = response_events(["Hel", "lo"], usage=usage)
    upstream.reply(events=events, done=False)
    response = respond_streamed(tally)
    received = body_of(response)
    assert response.status_code == 200
    assert received == b"".join(events)  # the final event, usage and all, as sent
    assert b'"usage": {"input_tokens": 11' in received.split(b"response.completed")[-1]
    # 7 uncached x $0.50 + 4 cached x $0.25 + 2 x $2.00, per million tokens
    cost = 0.00031 if reported else (7 * 0.5 + 4 * 0.25 + 2 * 2.0) / 1e6
    source = "upstream" if reported else "price_table"
    row = one_row(tally.flask_app)
    assert_row(row, "responses", (11, 2, 4), cost, source, "resp_fake_1")
    total = day_total(tally.flask_app)
    assert (total.requests, total.prompt_tokens, total.cached_tokens) == (1, 11, 4)
    assert total.cost == pytest.approx(cost)
