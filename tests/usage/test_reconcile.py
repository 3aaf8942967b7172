"""OpenRouter reconciliation: a stream cut before its usage is recorded ``estimated``; a
pass later asks the generation endpoint (a fake one, served over real HTTP on loopback)
and moves the row and the daily totals to the upstream's figures, exactly once — on
success, after 404s, and never (the row stays estimated after the attempts)."""

from __future__ import annotations

import json
from collections import deque
from datetime import timedelta

import pytest
import requests
from sqlalchemy import select
from werkzeug.wrappers import Request, Response

from tally.models import DailyModelTotal, DailyTotal, MonthlyUserTotal, RequestLog
from tally.usage import reconcile
from tally.usage.generations import GenerationClient
from tally.usage.reconcile import MAX_ATTEMPTS, PassReport, Reconciler, reconcile_pass
from tests.helpers.api import chat
from tests.helpers.payloads import chunks
from tests.helpers.rows import request_rows
from tests.helpers.upstream import FakeUpstream
from tests.helpers.waiting import wait_for

GEN = "gen-fake-2"  # the id of the fake upstream's stream chunks
FOUND = {
    "data": {
        "id": GEN,
        "total_cost": 0.0012,
        "usage": 0.0012,
        "tokens_prompt": 10,
        "tokens_completion": 6,
        "native_tokens_prompt": 9,
        "native_tokens_completion": 5,
        "native_tokens_cached": 3,
        "streamed": True,
        "cancelled": True,
        "model": "openai/gpt-4o-mini",
    }
}


class GenerationUpstream(FakeUpstream):
    """The fake upstream, plus ``GET /generation?id=…`` answering from ``answers[id]``
    (a queue of (status, body); 404 when empty), recording each ask."""

    def __init__(self) -> None:
        self.answers: dict[str, deque] = {}
        self.asked: list[tuple[str, str]] = []  # (id, Authorization header)
        super().__init__()

    def wsgi(self, environ, start_response):
        """The generation endpoint; anything else as the fake upstream answers it."""
        request = Request(environ)
        if not request.path.endswith("/generation"):
            return super().wsgi(environ, start_response)
        gen_id = request.args.get("id", "")
        self.asked.append((gen_id, request.headers.get("Authorization", "")))
        queue = self.answers.get(gen_id)
        status, body = queue.popleft() if queue else (404, {"error": {"code": 404}})
        return Response(json.dumps(body), status, mimetype="application/json")(
            environ, start_response
        )


@pytest.fixture
def upstream():
    """The fake upstream with a generation endpoint (replaces conftest's)."""
    fake = GenerationUpstream()
    yield fake
    fake.close()


# The cut stream's estimate: its prompt ("user", "Hi there" and the message's 4) and its
# two content events (the role chunk, "partial"); no price, no cost
ESTIMATE = (7, 2, 0, 9, 0.0)


@pytest.fixture
def estimated(tally, upstream):
    """One OpenRouter stream cut before its usage: its row, estimated."""
    upstream.reply(events=chunks(["partial"], usage=False)[:2], cut=True)
    b"".join(chat(tally, stream=True, user="ada").iter_content(chunk_size=None))
    [row] = wait_for(lambda: request_rows(tally.flask_app))
    assert (row.cost_source, row.cost, row.generation_id) == ("estimated", None, GEN)
    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (7, 2, 9)
    return row


def sessions(tally):
    return tally.flask_app.extensions["tally"].sessions


def figures_of(flask_app) -> dict[str, tuple]:
    """The row and every totals table's figures: (prompt, completion, cached, total, cost)."""
    out = {}
    with flask_app.extensions["tally"].sessions() as session:
        for model in (RequestLog, DailyTotal, DailyModelTotal, MonthlyUserTotal):
            [item] = session.scalars(select(model)).all()
            out[model.__tablename__] = (
                item.prompt_tokens,
                item.completion_tokens,
                item.cached_tokens,
                item.total_tokens,
                item.cost,
            )
            if model is not RequestLog:
                assert (item.requests, item.errors) == (1, 1)
    return out


def client(upstream) -> GenerationClient:
    return GenerationClient(upstream.url, "sk-up-secret")


def figures(tally) -> dict[str, tuple]:
    return figures_of(tally.flask_app)


def test_success_moves_the_row_and_the_totals_once(tally, upstream, estimated):
    upstream.answers[GEN] = deque([(200, FOUND)])
    result = tally.flask_app.test_cli_runner().invoke(args=["usage", "reconcile", "--all"])
    assert result.exit_code == 0, result.output
    assert f"{GEN}: reconciled, cost 0.001200 USD (estimated none), 14 tokens" in result.output
    assert "tokens (estimated 9)" not in result.output
    assert "Estimated costs: 1 reconciled, 0 to ask again later" in result.output
    assert upstream.asked == [(GEN, "Bearer sk-up-secret")]
    [row] = request_rows(tally.flask_app)
    assert (row.cost_source, row.reconcile_after, row.status) == ("reconciled", None, 502)
    expected = (9, 5, 3, 14, 0.0012)  # the native token counts, total_cost
    assert figures(tally) == {name: expected for name in figures(tally)}
    again = tally.flask_app.test_cli_runner().invoke(args=["usage", "reconcile", "--all"])
    assert "Estimated costs: 0 reconciled" in again.output
    assert len(upstream.asked) == 1 and figures(tally)["daily_totals"] == expected


def test_a_pass_waits_until_the_row_is_due(tally, upstream, estimated):
    upstream.answers[GEN] = deque([(200, FOUND)])
    report = reconcile_pass(sessions(tally), client(upstream), now=estimated.created_at)
    assert (report.reconciled, upstream.asked) == (0, [])  # due a few seconds after the end
    later = estimated.created_at + timedelta(seconds=4)
    assert reconcile_pass(sessions(tally), client(upstream), now=later).reconciled == 1


def test_404_then_success(tally, upstream, estimated):
    upstream.answers[GEN] = deque([(404, {"error": {"code": 404}}), (200, FOUND)])
    now = estimated.created_at + timedelta(seconds=4)
    report = reconcile_pass(sessions(tally), client(upstream), now=now)
    assert (report.reconciled, report.retrying) == (0, 1)
    assert report.lines == [
        f"{GEN}: HTTP 404; attempt 1 of {MAX_ATTEMPTS}, next at "
        f"{(now + timedelta(seconds=5)).isoformat(timespec='seconds')} UTC"
    ]
    [row] = request_rows(tally.flask_app)
    assert (row.cost_source, row.reconcile_attempts) == ("estimated", 1)
    assert figures(tally)["daily_totals"] == ESTIMATE
    soon = now + timedelta(seconds=4)
    assert reconcile_pass(sessions(tally), client(upstream), now=soon).lines == []  # not due
    report = reconcile_pass(sessions(tally), client(upstream), now=now + timedelta(seconds=5))
    assert report.reconciled == 1
    assert figures(tally)["daily_totals"] == (9, 5, 3, 14, 0.0012)


def test_never_found_stays_estimated_after_the_attempts(tally, upstream, estimated, caplog):
    now = estimated.created_at
    for _ in range(MAX_ATTEMPTS):
        now += timedelta(hours=1)  # past any wait
        report = reconcile_pass(sessions(tally), client(upstream), now=now)
    assert (report.gave_up, report.retrying) == (1, 0)
    assert report.lines == [f"{GEN}: HTTP 404; gave up, stays estimated"]
    assert len(upstream.asked) == MAX_ATTEMPTS
    [row] = request_rows(tally.flask_app)
    assert (row.cost_source, row.reconcile_after, row.reconcile_attempts) == (
        "estimated",
        None,
        MAX_ATTEMPTS,
    )
    reconcile_pass(sessions(tally), client(upstream), now=now + timedelta(days=1), due_only=False)
    assert len(upstream.asked) == MAX_ATTEMPTS  # never asked again
    warnings = [r for r in caplog.records if "stays estimated" in r.getMessage()]
    assert len(warnings) == 1 and "sk-up-secret" not in caplog.text


def test_the_waits_grow_and_sum_to_hours():
    waits = [reconcile.retry_delay(n).total_seconds() for n in range(1, MAX_ATTEMPTS)]
    assert waits[:4] == [5, 10, 20, 40] and max(waits) == 1800
    assert 1 * 3600 < sum(waits) < 3 * 3600


class OvertakenClient:
    """A generation client through which, at the first ask, another reconciler (a second
    worker, a cron'd CLI) runs a whole pass: it reads the same rows and applies them
    before the pass that asked, which read them first, gets its answer."""

    def __init__(self, sessions, client: GenerationClient):
        self.sessions, self.client = sessions, client
        self.overtaken: PassReport | None = None

    def fetch(self, generation_id: str):
        """Let the other reconciler finish first, then answer as the upstream does."""
        if self.overtaken is None:
            self.overtaken = reconcile_pass(self.sessions, self.client, due_only=False)
        return self.client.fetch(generation_id)


def test_two_reconcilers_never_apply_one_delta_twice(tally, upstream, estimated):
    upstream.answers[GEN] = deque([(200, FOUND), (200, FOUND)])
    racing = OvertakenClient(sessions(tally), client(upstream))
    report = reconcile_pass(sessions(tally), racing, due_only=False)
    assert racing.overtaken.reconciled == 1
    assert (report.reconciled, report.lines) == (0, [f"{GEN}: already reconciled elsewhere"])
    assert figures(tally)["daily_totals"] == (9, 5, 3, 14, 0.0012)


def test_an_estimate_priced_from_the_table_moves_by_the_difference(tally, upstream, estimated):
    with sessions(tally)() as session:  # as if partial usage had been priced at 0.001
        session.get(RequestLog, estimated.id).cost = 0.001
        session.query(DailyTotal).update({"cost": 0.001})
        session.commit()
    upstream.answers[GEN] = deque([(200, FOUND)])
    reconcile_pass(sessions(tally), client(upstream), due_only=False)
    with sessions(tally)() as session:
        assert session.scalars(select(DailyTotal.cost)).one() == pytest.approx(0.0012)
        assert session.scalars(select(DailyModelTotal.cost)).one() == pytest.approx(0.0002)


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (401, {"error": {"message": "No auth credentials found"}}, "HTTP 401"),
        (200, {"data": {"id": GEN}}, "no total_cost"),
        (200, ["not", "an", "object"], "no data"),
    ],
)
def test_other_failures_are_asked_again(tally, upstream, estimated, status, body, reason):
    upstream.answers[GEN] = deque([(status, body)])
    report = reconcile_pass(sessions(tally), client(upstream), due_only=False)
    assert report.retrying == 1 and report.lines[0].startswith(f"{GEN}: {reason}; attempt 1")


def test_an_unreachable_endpoint_never_shows_the_key(tally, estimated):
    dead = GenerationClient("http://127.0.0.1:9/api/v1", "sk-up-secret", timeout=1)
    report = reconcile_pass(sessions(tally), dead, due_only=False)
    assert report.lines[0].startswith(f"{GEN}: ConnectionError; attempt 1")
    assert "sk-up-secret" not in repr(dead) and "sk-up-secret" not in "".join(report.lines)


def test_the_background_reconciler_applies_due_rows(tally, upstream, estimated):
    upstream.answers[GEN] = deque([(200, FOUND)])
    with sessions(tally)() as session:  # due now
        session.get(RequestLog, estimated.id).reconcile_after = estimated.created_at
        session.commit()
    worker = Reconciler(sessions(tally), client(upstream), interval=0.05).start()
    try:
        assert wait_for(lambda: request_rows(tally.flask_app)[0].cost_source == "reconciled")
    finally:
        worker.stop()
    assert figures(tally)["daily_totals"] == (9, 5, 3, 14, 0.0012)


def test_the_demo_upstream_has_nothing_to_reconcile(runner):
    result = runner.invoke(args=["usage", "reconcile"])
    assert result.exit_code == 0
    assert "No upstream URL is set" in result.output


def test_under_gunicorn_the_usage_writer_process_reconciles(gunicorn, upstream, app, make_key):
    """… and corrects the token counter every worker reads (the instance's file)."""
    from tally.limits.policy_store import set_policy

    with app.extensions["tally"].sessions() as session:
        set_policy(session, "tier:default", {"messages": None, "daily_tokens": 100}, "test")
    upstream.reply(events=chunks(["partial"], usage=False)[:2], cut=True)
    upstream.answers[GEN] = deque([(404, {}), (200, FOUND)])
    key = make_key()
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "user": "ada"}

    def call(**extra):
        return requests.post(
            gunicorn.url + "/v1/chat/completions",
            json={**body, **extra},
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )

    response = call(stream=True)
    assert response.status_code == 200 and b"upstream" in response.content
    assert wait_for(lambda: [r.cost_source for r in request_rows(app)] == ["estimated"])
    # due 3 s after the call, a pass every 5 s: a 404, then the figures 5 s later
    assert wait_for(lambda: request_rows(app)[0].cost_source == "reconciled", timeout=30)
    assert [gen for gen, _auth in upstream.asked] == [GEN, GEN]
    assert figures_of(app)["daily_totals"] == (9, 5, 3, 14, 0.0012)
    # 8 tokens estimated (6 of prompt, 2 events), then 14: 86 of 100 left
    assert call().headers["X-RateLimit-Remaining"] == "86"


def test_the_limits_count_the_reconciled_figures(tally, upstream, estimated):
    """The estimate went to the user's token and budget counters; the reconciled call
    moves them by the difference (9 tokens estimated, 14 real; $0 then $0.0012)."""
    from tally.limits.policy_store import set_policy

    with sessions(tally)() as session:
        set_policy(
            session,
            "tier:default",
            {"messages": None, "daily_tokens": 20, "daily_budget": 1},
            "test",
        )
    first = chat(tally, user="ada", max_tokens=1)  # rebuilt from the log: 9 of 20 used
    assert first.headers["X-RateLimit-Remaining"] == "11"
    upstream.answers[GEN] = deque([(200, FOUND)])
    assert reconcile_pass(sessions(tally), client(upstream), due_only=False).reconciled == 1
    assert first.status_code == 200  # the fake's answer: 15 tokens, $0.00042
    after = chat(tally, user="ada", max_tokens=1)
    assert after.status_code == 429  # 14 + 15 tokens
    with sessions(tally)() as session:
        set_policy(session, "tier:default", {"daily_tokens": None}, "test")
    budget = chat(tally, user="ada")
    assert budget.headers["X-RateLimit-Remaining"] == "0.99838"  # $1 - $0.0012 - $0.00042
