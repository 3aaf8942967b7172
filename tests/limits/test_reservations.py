"""Limits that hold against many calls at once and cut streams (PRODUCT.md, Limits:
"Limits hold against the ways around them"): a call reserves what it is expected to use
until its answer ends, so concurrent calls overshoot a token limit or a budget by one
call at most; a stream cut by either side counts an estimate at once; a limit set again
counts its whole window. Over real HTTP, in front of the fake upstream."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tally.limits.policy_store import unset_policy
from tests.helpers.api import BASE, chat
from tests.helpers.limits import set_limits
from tests.helpers.payloads import Pause, chunks, completion
from tests.helpers.rows import request_rows
from tests.helpers.waiting import wait_for

COST = 0.0004  # what each call of the fake upstream costs here
USAGE = {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30, "cost": COST}


def user() -> str:
    return f"u-{uuid.uuid4().hex[:8]}"


def at_once(server, upstream, who: str, calls: int, **extra) -> list[int]:
    """``calls`` chat calls of ``who`` sent together, each answered after 0.4 s (so all
    of them are in flight at once); their statuses."""
    for _ in range(calls):
        upstream.reply(json=completion(usage=USAGE), hang=0.4)
    with ThreadPoolExecutor(calls) as pool:
        return list(pool.map(lambda _: chat(server, user=who, **extra).status_code, range(calls)))


def test_a_budget_holds_against_calls_sent_at_once(tally, upstream):
    set_limits(tally.flask_app, "tier:default", "messages=none", "daily_budget=0.002")
    who = user()
    upstream.reply(json=completion(usage=USAGE))
    assert chat(tally, user=who).status_code == 200  # the model's cost is known now
    statuses = at_once(tally, upstream, who, 24)
    # $0.0004 spent, each call holds $0.0004: four more fit under $0.002, not a fifth
    assert statuses.count(200) == 4, statuses
    refused = chat(tally, user=who)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "budget_exceeded"
    spent = sum(r.cost or 0 for r in request_rows(tally.flask_app) if r.status == 200)
    assert spent == pytest.approx(0.002)


def test_a_token_limit_holds_with_the_requests_max_tokens(tally, upstream):
    set_limits(tally.flask_app, "tier:default", "messages=none", "daily_tokens=100")
    who = user()
    # each holds its prompt (7 tokens) and its max_tokens: 0, 32, 64 and 96 held when
    # the first four are admitted, 128 for a fifth
    statuses = at_once(tally, upstream, who, 10, max_tokens=25)
    assert statuses.count(200) == 4, statuses
    refused = chat(tally, user=who)  # 120 used: over by less than the last call
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"


def test_a_refusal_by_calls_in_flight_says_they_free_up_soon(tally, upstream):
    set_limits(tally.flask_app, "tier:default", "messages=none", "daily_tokens=40")
    who = user()
    gate = threading.Event()
    upstream.reply(events=[*chunks(["a"])[:1], gate, *chunks(["b"], usage=USAGE)[1:]])
    held = chat(tally, user=who, stream=True, max_tokens=40)  # holds 7 + 40
    assert held.status_code == 200
    refused = chat(tally, user=who, max_tokens=30)
    gate.set()
    held.close()
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) <= 2  # not the end of the UTC day


def test_a_hold_is_released_when_its_call_ends(tally, upstream):
    set_limits(tally.flask_app, "tier:default", "messages=none", "daily_budget=0.001")
    who = user()
    statuses = []
    for _ in range(4):
        upstream.reply(json=completion(usage=USAGE))
        statuses.append(chat(tally, user=who).status_code)
    assert statuses == [200, 200, 200, 429]  # $0.0008 spent and nothing held: a third


def test_an_upstream_error_releases_the_hold(tally, upstream):
    set_limits(tally.flask_app, "tier:default", "messages=none", "daily_tokens=40")
    who = user()
    upstream.reply(status=500, json={"error": {"message": "boom", "code": 500}})
    assert chat(tally, user=who, max_tokens=40).status_code == 500
    upstream.reply(json=completion(usage=USAGE))
    assert chat(tally, user=who, max_tokens=40).status_code == 200


def cut_stream(server, upstream, who: str, by: str, words: int = 5):
    """A stream of ``words`` content events that ends before its usage: the upstream
    breaks off, or the client goes away after reading them."""
    events = chunks([f"w{i}" for i in range(words)], usage=USAGE)[: words + 1]
    if by == "upstream":
        upstream.reply(events=events, cut=True, done=False)
        response = chat(server, user=who, stream=True)
        _ = response.content  # read to its end
        return response
    upstream.reply(events=[*events, Pause(5), *chunks(["late"], usage=USAGE)[2:]])
    response = chat(server, user=who, stream=True)
    seen = b""
    for part in response.iter_content(None):
        seen += part
        if seen.count(b"data:") >= words + 1:
            break
    response.close()
    return response


@pytest.mark.parametrize("by", ["upstream", "client"])
def test_a_cut_stream_counts_an_estimate_at_once(tally, upstream, by):
    set_limits(tally.flask_app, "tier:default", "messages=none", "daily_tokens=30")
    who = user()
    cut_stream(tally, upstream, who, by)
    [row] = wait_for(lambda: [r for r in request_rows(tally.flask_app) if r.stream] or None)
    assert row.cost_source == "estimated"
    assert row.completion_tokens == 6  # one per content event relayed (the role chunk too)
    assert row.prompt_tokens == 7  # "user", "Hi there": 12 characters, and the message's 4
    assert row.total_tokens == 13
    upstream.reply(json=completion(usage=USAGE))
    after = chat(tally, user=who)
    assert (after.status_code, after.headers["X-RateLimit-Remaining"]) == (200, "17")
    assert chat(tally, user=who).status_code == 429  # 13 + 30 used


def test_a_cut_stream_of_an_unpriced_model_costs_its_largest_call(tally, upstream):
    set_limits(tally.flask_app, "tier:default", "messages=none", "daily_budget=0.001")
    who = user()
    upstream.reply(json=completion(usage=USAGE))
    assert chat(tally, user=who).status_code == 200
    cut_stream(tally, upstream, who, "upstream")
    rows = wait_for(lambda: [r for r in request_rows(tally.flask_app) if r.stream] or None)
    assert (rows[0].cost_source, rows[0].cost) == ("estimated", pytest.approx(COST))
    upstream.reply(json=completion(usage=USAGE))
    assert chat(tally, user=who).status_code == 200  # $0.0008 spent: one more goes
    assert chat(tally, user=who).status_code == 429  # $0.0012


def test_a_limit_set_again_counts_what_was_sent_while_it_was_off(tally, upstream):
    app = tally.flask_app
    who = user()
    set_limits(app, "user:" + who, "messages=3")
    assert chat(tally, user=who).status_code == 200
    with app.extensions["tally"].sessions() as session:
        unset_policy(session, "user:" + who, "test")
    assert [chat(tally, user=who).status_code for _ in range(4)] == [200] * 4
    set_limits(app, "user:" + who, "messages=3")
    refused = chat(tally, user=who)
    assert refused.status_code == 429, refused.headers.get("X-RateLimit-Remaining")
    assert refused.headers["X-RateLimit-Remaining"] == "0"


def test_a_token_limit_set_again_counts_the_whole_day(tally, upstream):
    app = tally.flask_app
    who = user()
    for _ in range(3):
        upstream.reply(json=completion(usage=USAGE))
        assert chat(tally, user=who).status_code == 200
    set_limits(app, "tier:default", "daily_tokens=100")  # 90 used today already
    upstream.reply(json=completion(usage=USAGE))
    ok = chat(tally, user=who)
    assert ok.status_code == 200
    assert chat(tally, user=who).status_code == 429


def test_a_client_that_never_reads_its_stream_cannot_hold_a_budget_forever(tally, upstream):
    """What a call holds is let go when it ends, however it ends: a stream left unread
    ends when the upstream times out (2 s here)."""
    set_limits(tally.flask_app, "tier:default", "messages=none", "daily_tokens=45")
    who = user()
    upstream.reply(events=[*chunks(["a"])[:2], Pause(4)], done=False)
    body = {**BASE, "user": who, "stream": True, "max_tokens": 40}
    headers = {"Authorization": f"Bearer {tally.key}"}
    hanging = requests.post(
        f"{tally.url}/v1/chat/completions", json=body, headers=headers, stream=True, timeout=10
    )
    assert hanging.status_code == 200
    assert chat(tally, user=who, max_tokens=40).status_code == 429  # held by the stream
    _ = hanging.content  # the upstream's stall ends it (timeout): estimated, released
    upstream.reply(json=completion(usage=USAGE))
    assert wait_for(lambda: chat(tally, user=who, max_tokens=10).status_code == 200)


@pytest.mark.parametrize("cap", [10**30, -5, 2.5, "lots", None, True])
def test_any_max_tokens_is_held_as_a_number_never_a_failure(tally, upstream, cap):
    """A cap a client made up is held as at most 100 million tokens (or ignored when it
    is not a whole number): the call is served, and the limit still holds."""
    set_limits(tally.flask_app, "tier:default", "messages=none", "daily_tokens=1000")
    who = user()
    gate = threading.Event()
    upstream.reply(events=[*chunks(["a"])[:1], gate, *chunks(["b"], usage=USAGE)[1:]])
    held = chat(tally, user=who, stream=True, max_tokens=cap)
    assert held.status_code == 200
    second = chat(tally, user=who)
    gate.set()
    _ = held.content
    huge = isinstance(cap, int) and not isinstance(cap, bool) and cap > 1000
    assert second.status_code == (429 if huge else 200)
