"""Limits over real HTTP against the fake upstream, on a clock the test moves: exact
boundaries, headers and bodies, tier selection, overrides, key policies, and what
costs quota (only requests that reach the upstream)."""

from __future__ import annotations

import pytest

from tests.helpers.api import body_of, chat, embed, respond
from tests.helpers.limits import T0, Clock, iso, next_month, reset, set_limits, use_clock
from tests.helpers.payloads import (
    chunks,
    completion,
    embedding_answer,
    response_events,
    response_object,
)


@pytest.fixture
def clock(tally) -> Clock:
    """The limits of ``tally`` on a clock that starts at 01:00 UTC today."""
    return use_clock(tally.flask_app, Clock())


def test_the_nth_passes_the_next_is_refused_and_the_window_end_frees_it(tally, clock):
    set_limits(tally.flask_app, "tier:default", "messages=3")
    first = clock.now
    for remaining in (2, 1, 0):
        response = chat(tally, user="u-1")
        assert response.status_code == 200
        assert response.headers["X-RateLimit-Limit"] == "3"
        assert response.headers["X-RateLimit-Remaining"] == str(remaining)
        assert response.headers["X-RateLimit-Reset"] == str(int(first + 86400 + 1))
        clock.advance(10)
    refused = chat(tally, user="u-1")
    assert refused.status_code == 429
    reset_at = int(first + 86400 + 1)
    assert refused.headers["X-RateLimit-Limit"] == "3"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert refused.headers["X-RateLimit-Reset"] == str(reset_at)
    assert refused.headers["Retry-After"] == str(int(reset_at - clock.now))
    error = refused.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["code"] == "rate_limit_exceeded"
    assert error["param"] is None
    assert error["message"].startswith(
        "The message quota of 3 requests per rolling 24 hours for this user is used up."
    )
    assert f"(at {iso(reset_at)})" in error["message"]
    assert len(tally_upstream_calls(tally)) == 3  # the refused one never went upstream
    clock.now = first + 86400 - 0.5  # the first hit is still inside the window
    assert chat(tally, user="u-1").status_code == 429
    clock.now = first + 86400  # exactly 24 h old: still inside (as limits counts it)
    assert chat(tally, user="u-1").status_code == 429
    clock.now = first + 86400 + 0.001  # it left the window: one more fits
    response = chat(tally, user="u-1")
    assert response.status_code == 200
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert chat(tally, user="u-1").status_code == 429
    assert chat(tally, user="u-2").status_code == 200  # every user has a quota of their own


def tally_upstream_calls(tally):
    return [r for r in tally.upstream.requests if r.path.endswith("/chat/completions")]


@pytest.fixture(autouse=True)
def _upstream_on_server(tally, upstream):
    tally.upstream = upstream


def test_rpm_is_a_rolling_minute(tally, clock):
    set_limits(tally.flask_app, "tier:default", "messages=none", "rpm=2")
    assert [chat(tally, user="u-1").status_code for _ in range(3)] == [200, 200, 429]
    clock.advance(59)
    refused = chat(tally, user="u-1")
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "2"  # int(reset + 1 - now), as flask-limiter
    assert "2 requests per minute" in refused.json()["error"]["message"]
    clock.advance(1.5)
    assert chat(tally, user="u-1").status_code == 200


def test_a_refused_request_costs_no_quota(tally, clock, upstream):
    set_limits(tally.flask_app, "tier:default", "messages=2")
    set_limits(tally.flask_app, "key:web", "rpm=3")
    assert chat(tally, body={"model": "m"}, headers={"X-Tally-User": "u-1"}).status_code == 400
    assert chat(tally, user="u-1", key="wrong").status_code == 401
    big = {"model": "m", "messages": [{"role": "user", "content": "x" * 70000}], "user": "u-1"}
    assert chat(tally, body=big).status_code == 413
    assert chat(tally, user="u-1").headers["X-RateLimit-Remaining"] == "1"
    assert chat(tally, user="u-1").status_code == 200
    # refused by the user's message quota: the key's rpm is not charged either
    assert chat(tally, user="u-1").status_code == 429
    assert chat(tally, user="u-1").status_code == 429
    assert chat(tally, user="u-2").status_code == 200  # key rpm: 3 used, not 5
    refused = chat(tally, user="u-3")
    assert refused.status_code == 429
    message = refused.json()["error"]["message"]
    assert "3 requests per minute for this API key as a whole" in message
    # refused by the key's rpm: u-3's own quota is untouched
    clock.advance(61)
    assert chat(tally, user="u-3").headers["X-RateLimit-Remaining"] == "1"
    assert len(tally_upstream_calls(tally)) == 4


def test_an_upstream_error_still_counts(tally, clock, upstream):
    set_limits(tally.flask_app, "tier:default", "messages=2")
    upstream.reply(status=500, json={"error": {"message": "boom"}})
    failed = chat(tally, user="u-1")
    assert failed.status_code == 500
    assert failed.headers["X-RateLimit-Remaining"] == "1"  # it reached the upstream


def test_tier_from_metadata_and_user_override_field_by_field(tally, clock):
    app = tally.flask_app
    set_limits(app, "tier:default", "messages=1")
    set_limits(app, "tier:pro", "messages=3", "rpm=10")
    pro = {"id": "p-1", "metadata": [{"plan": "pro"}]}
    statuses = [chat(tally, identity=pro).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    # stored metadata places the user on later requests that do not send it
    assert chat(tally, user="p-1").status_code == 429
    unknown = {"id": "x-1", "metadata": [{"plan": "platinum"}]}  # no such tier: default
    assert [chat(tally, identity=unknown).status_code for _ in range(2)] == [200, 429]
    # the override changes rpm only; messages still comes from tier:pro
    set_limits(app, "user:p-2", "rpm=1")
    pro2 = {"id": "p-2", "metadata": [{"plan": "pro"}]}
    first = chat(tally, identity=pro2)
    assert first.headers["X-RateLimit-Limit"] == "3"
    refused = chat(tally, identity=pro2)
    assert refused.status_code == 429
    assert "1 requests per minute" in refused.json()["error"]["message"]
    # tier_key picks another metadata key
    with app.extensions["tally"].sessions() as session:
        from tally.limits.policy_store import set_tier_key

        set_tier_key(session, "tier", "test")
    t = {"id": "t-1", "metadata": [{"tier": "pro"}]}
    assert chat(tally, identity=t).headers["X-RateLimit-Limit"] == "3"


def test_a_key_policy_holds_all_its_users_together(tally, clock, make_key):
    set_limits(tally.flask_app, "key:web", "messages=3")
    statuses = [chat(tally, user=f"u-{i}").status_code for i in range(4)]
    assert statuses == [200, 200, 200, 429]
    other = make_key("other")
    assert chat(tally, user="u-9", key=other).status_code == 200  # another tenant


def test_anonymous_requests_share_a_bucket_per_key(tally, clock, make_key):
    set_limits(tally.flask_app, "tier:anonymous", "messages=2")
    assert [chat(tally).status_code for _ in range(3)] == [200, 200, 429]
    assert chat(tally, key=make_key("other")).status_code == 200
    assert chat(tally, user="u-1").status_code == 200  # named users: tier:default


@pytest.mark.parametrize("stream", [False, True])
def test_tokens_count_toward_the_daily_token_limit(tally, clock, upstream, stream):
    set_limits(tally.flask_app, "tier:default", "messages=none", "daily_tokens=30")
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "cost": 0.001}
    for _ in range(2):
        if stream:
            upstream.reply(events=chunks(["a"], usage=usage))
        else:
            upstream.reply(json=completion(usage=usage))
        response = chat(tally, user="u-1", stream=stream)
        assert response.status_code == 200
        assert response.content  # read to the end: the stream ends, its usage is counted
    refused = chat(tally, user="u-1", stream=stream)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert "daily limit of 30 tokens" in refused.json()["error"]["message"]
    assert refused.headers["X-RateLimit-Reset"] == str(int(T0 + 86400 + 1))
    clock.advance(86400)  # a new UTC day
    assert chat(tally, user="u-1").status_code == 200


@pytest.mark.parametrize("stream", [False, True])
def test_cost_counts_toward_budgets(tally, clock, upstream, stream):
    app = tally.flask_app
    set_limits(app, "tier:default", "messages=none", "daily_budget=2", "monthly_budget=4")
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "cost": 1.5}

    def spend():
        if stream:
            upstream.reply(events=chunks(["a"], usage=usage))
        else:
            upstream.reply(json=completion(usage=usage))
        response = chat(tally, user="u-1", stream=stream)
        assert response.content
        return response

    assert spend().status_code == 200
    assert spend().status_code == 200  # $1.50 spent is under $2: the call may go
    refused = spend()
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "budget_exceeded"
    assert "daily budget of $2" in refused.json()["error"]["message"]
    assert refused.headers["X-RateLimit-Reset"] == str(int(T0 + 86400 + 1))
    set_limits(app, "tier:default", "daily_budget=none")
    assert spend().status_code == 200  # $3 of $4 this month
    refused = spend()
    assert refused.status_code == 429
    assert "monthly budget of $4" in refused.json()["error"]["message"]
    assert refused.headers["X-RateLimit-Reset"] == str(int(next_month(T0) + 1))


def test_reset_lifts_a_users_limit(tally, clock):
    set_limits(tally.flask_app, "tier:default", "messages=1")
    assert [chat(tally, user="u-1").status_code for _ in range(2)] == [200, 429]
    reset(tally.flask_app, "user:u-1")
    assert [chat(tally, user="u-1").status_code for _ in range(2)] == [200, 429]


def test_the_shipped_default_is_1000_messages(tally, clock):
    response = chat(tally, user="u-1")
    assert response.headers["X-RateLimit-Limit"] == "1000"
    assert response.headers["X-RateLimit-Remaining"] == "999"


def test_counters_are_rebuilt_from_the_request_log(tally, clock, make_app):
    """A restarted storage does not hand out a fresh quota: the request log refills it."""
    from tally.limits.storage.registry import LocalStorage

    set_limits(tally.flask_app, "tier:default", "messages=3")
    assert chat(tally, user="u-1").status_code == 200
    assert chat(tally, user="u-1").status_code == 200
    runtime = tally.flask_app.extensions["tally"].limits
    runtime.storage = LocalStorage()  # as after a restart: nothing held
    runtime.ready.clear()  # a restarted instance's workers start with nothing trusted
    runtime.set_clock(__import__("time").time)
    response = chat(tally, user="u-1")
    assert response.status_code == 200
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert chat(tally, user="u-1").status_code == 429


def test_answers_before_admission_carry_the_users_headers_and_cost_nothing(tally, clock):
    set_limits(tally.flask_app, "tier:default", "messages=5")
    assert chat(tally, user="u-1").status_code == 200
    bad = chat(tally, body={"model": "m", "messages": [], "user": "u-1"})
    assert bad.status_code == 400
    assert bad.headers["X-RateLimit-Limit"] == "5"
    assert bad.headers["X-RateLimit-Remaining"] == "4"
    import requests

    models = requests.get(
        f"{tally.url}/v1/models",
        headers={"Authorization": f"Bearer {tally.key}", "X-Tally-User": "u-1"},
        timeout=10,
    )
    assert models.status_code == 200
    assert models.headers["X-RateLimit-Remaining"] == "4"
    assert chat(tally, user="u-1").headers["X-RateLimit-Remaining"] == "3"


def test_every_endpoint_shares_the_users_quota_and_carries_the_headers(tally, clock):
    set_limits(tally.flask_app, "tier:default", "messages=3", "daily_tokens=1000")
    tally.upstream.reply(json=response_object())
    whole = respond(tally, user="u-1")
    assert (whole.status_code, whole.headers["X-RateLimit-Remaining"]) == (200, "2")
    tally.upstream.reply(events=response_events(["a"]), done=False)
    streamed = respond(tally, user="u-1", stream=True)
    assert streamed.headers["X-RateLimit-Remaining"] == "1"
    body_of(streamed)
    tally.upstream.reply(json=embedding_answer())
    assert embed(tally, user="u-1").headers["X-RateLimit-Remaining"] == "0"
    refused = respond(tally, user="u-1")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert len(tally.upstream.requests) == 3
    # Tokens of every endpoint count: 13 + 13 (Responses usage) + 5 (embeddings).
    set_limits(tally.flask_app, "tier:default", "messages=none", "daily_tokens=31")
    tally.upstream.reply(json=embedding_answer())
    refused = embed(tally, user="u-1")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert "31 tokens" in refused.json()["error"]["message"]
    # And their cost: 2 × $0.00031 from the Responses API's usage.cost.
    set_limits(tally.flask_app, "tier:default", "daily_tokens=none", "daily_budget=0.0006")
    refused = respond(tally, user="u-1")
    assert (refused.status_code, refused.json()["error"]["code"]) == (429, "budget_exceeded")
