"""An app that writes its rows inline (the testing config; ``TALLY_USAGE_WRITES=inline``),
served in this process over real HTTP, delivers its sinks' events with a loop of its
own: no usage writer process, no test driving ``deliver_pass``. A receiver that answers
503 for a while during traffic gets every answered call's event once it is back, once
per id, signed per Standard Webhooks (checked here with the spec's algorithm, not
Tally's verifier), with the figures of the call's row; the tries follow the backoff."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from sqlalchemy import select

from tally.db import utcnow
from tally.models import RequestLog, Sink, SinkEvent
from tally.sinks.admin import add_sink
from tests.helpers.api import chat
from tests.helpers.payloads import completion
from tests.helpers.receivers import events_of
from tests.helpers.waiting import wait_for

IDENTITY = {"id": "ada", "metadata": [{"stripe_customer_id": "cus_ada"}]}
STRIPE, OPENMETER = "/v1/billing/meter_events", "/api/v1/events"


def standard_signature(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks' verification, from the spec: HMAC-SHA256 keyed with the
    base64 part of ``whsec_…`` over ``id.timestamp.body``, base64, after ``v1,``."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    given = [part.removeprefix("v1,") for part in headers["webhook-signature"].split(" ")]
    fresh = abs(time.time() - int(headers["webhook-timestamp"])) < 300
    return fresh and any(hmac.compare_digest(expected, g) for g in given)


def _call(tally, user: str = "ada") -> str:
    identity = {**IDENTITY, "id": user}
    response = chat(tally, identity=identity)
    assert response.status_code == 200
    return response.headers["X-Request-Id"]


def _hook_ids(receiver) -> list[str]:
    return [got.headers["webhook-id"] for got in receiver.on("/hook")]


def test_an_inline_app_delivers_its_events_through_an_outage(tally, receiver, sinks):
    before = [_call(tally) for _ in range(2)]
    # delivered by the app's own loop, with no one else driving it
    assert wait_for(lambda: sorted(_hook_ids(receiver)) == sorted(before), timeout=10)
    receiver.failing = 503
    during = [_call(tally, f"user-{n}") for n in range(4)]
    first = during[0]
    # the loop tries, fails, backs off; its first retry comes within 5 s (plus a pass)
    assert wait_for(lambda: len(_tries(receiver, first)) >= 2, timeout=10)
    receiver.failing = None
    after = [_call(tally) for _ in range(2)]
    ids = before + during + after
    assert wait_for(lambda: sorted(set(_hook_ids(receiver))) == sorted(ids), timeout=20)
    customers = lambda: sorted(g.form["identifier"] for g in receiver.on(STRIPE))  # noqa: E731
    assert wait_for(lambda: customers() == sorted(ids), timeout=10)
    metered = lambda: sorted(e["id"] for e in events_of(receiver.on(OPENMETER)))  # noqa: E731
    assert wait_for(lambda: metered() == sorted(ids), timeout=10)
    time.sleep(1.5)  # a pass or more: nothing is sent twice
    assert sorted(_hook_ids(receiver)) == sorted(ids)
    assert customers() == metered() == sorted(ids)

    tried = _tries(receiver, first)
    assert 4.5 <= tried[1] - tried[0] <= 7.0  # 5 s, found by a pass (1 s apart) once due
    hooks = receiver.on("/hook")
    assert all(standard_signature(sinks, g.headers, g.body) for g in hooks)
    runtime = tally.flask_app.extensions["tally"]
    with runtime.sessions() as session:
        rows = {r.request_id: r for r in session.scalars(select(RequestLog))}
        events = session.scalars(select(SinkEvent)).all()
    assert len(events) == 3 * len(ids) and all(e.delivered_at for e in events)
    for got in hooks:
        event, row = got.json, rows[got.headers["webhook-id"]]
        assert event["id"] == row.request_id and event["type"] == "llm.usage"
        data = event["data"]
        assert data["model"] == row.model and data["cost_usd"] == row.cost
        assert (data["prompt_tokens"], data["completion_tokens"]) == (
            row.prompt_tokens,
            row.completion_tokens,
        )
        assert data["total_tokens"] == row.total_tokens
    assert {g.json["subject"] for g in hooks if g.json["id"] in during} == {
        f"user-{n}" for n in range(4)
    }
    for form in (g.form for g in receiver.on(STRIPE)):
        assert form["payload[value]"] == str(rows[form["identifier"]].total_tokens)


def _tries(receiver, event_id: str) -> list[float]:
    """When the webhook receiver was sent ``event_id`` (answered or not)."""
    return [when for when, path, ids, _ in receiver.tries if path == "/hook" and event_id in ids]


def test_the_loop_stops_with_the_app(make_app, receiver):
    """The recorder's close (at exit; the tests' teardown) stops the loop: no thread of
    an app that is gone keeps polling its database."""
    app = make_app()
    usage = app.extensions["tally"].usage
    assert usage.deliveries is not None and usage.deliveries.loop is None  # no sink yet
    usage.deliveries.wake()
    assert usage.deliveries.loop is None  # still none: nothing to deliver to
    runtime = app.extensions["tally"]
    with runtime.sessions() as session:
        add_sink(session, runtime.settings.secret_key, "h", "webhook", receiver.url, "t")
    usage.deliveries.wake()
    loop = usage.deliveries.loop
    assert loop is not None and loop._thread.is_alive()
    usage.close()
    assert not loop._thread.is_alive()
    usage.deliveries.wake()
    assert usage.deliveries.loop is loop  # not started again


def test_unusual_text_travels_into_every_event_unchanged(tally, receiver, sinks, upstream):
    """An end user id with emoji, a character outside the BMP, a quote, a backslash and
    a line separator, a model name with the same, and a request body nested about 115 levels
    deep (tools' JSON schemas): every sink gets the user and the model as the row holds
    them, its body valid JSON (Stripe's form encoded), the signature over those bytes."""
    user = 'ádá 🦄 "q" \\ \u2028 𝔘'
    model = "vendor/módel-✓ \u2028"
    deep: dict = {}
    for _ in range(55):  # two levels each: 110, with the body's own about 115
        deep = {"type": "object", "properties": {"x": deep}}
    tools = [{"type": "function", "function": {"name": "f", "parameters": deep}}]
    upstream.reply(json=completion(model=model))
    response = chat(tally, identity={**IDENTITY, "id": user}, model=model, tools=tools)
    assert response.status_code == 200, response.text
    request_id = response.headers["X-Request-Id"]
    assert wait_for(lambda: request_id in _hook_ids(receiver), timeout=10)
    assert wait_for(lambda: len(receiver.on(STRIPE)) == 1 and events_of(receiver.on(OPENMETER)))
    [hook] = receiver.on("/hook")
    assert standard_signature(sinks, hook.headers, hook.body)
    assert hook.json["subject"] == user and hook.json["data"]["model"] == model
    assert json.loads(hook.body.decode("utf-8")) == hook.json
    [metered] = events_of(receiver.on(OPENMETER))
    assert metered["subject"] == user and metered["data"]["model"] == model
    [billed] = receiver.on(STRIPE)
    assert billed.form["identifier"] == request_id
    assert billed.form["payload[stripe_customer_id]"] == "cus_ada"
    runtime = tally.flask_app.extensions["tally"]
    with runtime.sessions() as session:
        [row] = session.scalars(select(RequestLog)).all()
        assert (row.user.external_id, row.model) == (user, model)


def test_a_replay_is_delivered_by_an_app_that_has_had_no_call(tally, tally_admin, receiver):
    """The loop of an inline app starts with its first call once a sink exists; a replay
    from the console starts it too, so an app that has served no call since it started
    still delivers what the replay queued."""
    runtime = tally.flask_app.extensions["tally"]
    with runtime.sessions() as session:
        add_sink(
            session, runtime.settings.secret_key, "hook", "webhook", receiver.url + "/hook", "t"
        )
        session.add(RequestLog(request_id="r-1", created_at=utcnow(), status=200, total_tokens=5))
        session.commit()
        sink_id = session.scalar(select(Sink.id))
    assert runtime.usage.deliveries.loop is None  # no call yet: not started
    day = utcnow().date().isoformat()
    response = tally_admin.post(f"/sinks/{sink_id}/replay", {"from": day}, htmx=True)
    assert response.status_code == 200
    assert wait_for(lambda: _hook_ids(receiver) == ["r-1"], timeout=10)
