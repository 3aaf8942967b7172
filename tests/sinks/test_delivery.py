"""Usage events out, end to end: calls through Tally over HTTP, the outbox written with
their rows, the delivery loop (its clock injected: no sleeping) sending them to loopback
receivers that go down and come back. Every answered call's event arrives once per
event id, with its figures, signed; a refused event is parked without blocking the
others; the waits between tries follow the backoff."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from sqlalchemy import select

from tally.db import utcnow
from tally.models import RequestLog, Sink, SinkEvent
from tally.sinks.delivery import GIVE_UP, deliver_pass, retry_delay
from tally.sinks.outbox import enqueue_usage
from tally.sinks.signing import sign, verify
from tally.usage.call import CallRecord, Outcome
from tally.usage.records import record_calls
from tests.helpers.api import chat
from tests.helpers.receivers import events_of

# the test sends with deliver_pass, at the time it says: no loop of the app's races it
pytestmark = pytest.mark.manual_delivery

IDENTITY = {"id": "ada", "metadata": [{"stripe_customer_id": "cus_ada"}]}
STRIPE = "/v1/billing/meter_events"
OPENMETER = "/api/v1/events"


def test_the_signer_matches_the_standard_webhooks_test_vector():
    """The spec's published example (standard-webhooks, spec/standard-webhooks.md)."""
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": f"v1,bogus {expected}",
    }
    assert verify(secret, headers, body, now=1614265330)
    assert not verify(secret, headers, body + b" ", now=1614265330)
    assert not verify(secret, headers, body, now=1614265330 + 301)  # outside the tolerance
    assert not verify("whsec_" + base64.b64encode(b"x" * 24).decode(), headers, body, 1614265330)


def _rows(tally) -> dict[str, RequestLog]:
    with tally.flask_app.extensions["tally"].sessions() as session:
        return {row.request_id: row for row in session.scalars(select(RequestLog))}


def _pass(tally, now):
    runtime = tally.flask_app.extensions["tally"]
    return deliver_pass(runtime.sessions, runtime.settings.secret_key, now=now)


def _events(tally) -> list[SinkEvent]:
    with tally.flask_app.extensions["tally"].sessions() as session:
        return list(session.scalars(select(SinkEvent).order_by(SinkEvent.id)))


def test_every_call_arrives_once_per_sink_through_an_outage(tally, receiver, sinks):
    calls = [chat(tally, identity=IDENTITY) for _ in range(3)]
    calls.append(chat(tally, user="bob"))  # no Stripe customer: not sent to Stripe
    assert all(r.status_code == 200 for r in calls)
    ids = [r.headers["X-Request-Id"] for r in calls]
    receiver.down()
    t0 = utcnow()
    report = _pass(tally, t0)
    assert report.delivered == 0 and report.retrying == 3  # one tried per sink, it failed
    waiting = {e.event_id for e in _events(tally) if e.next_attempt_at is not None}
    assert waiting >= set(ids)
    # each sink waits the first backoff, its events behind the failed one too
    assert {e.next_attempt_at for e in _events(tally)} == {t0 + timedelta(seconds=5)}
    more = chat(tally, identity=IDENTITY)
    ids.append(more.headers["X-Request-Id"])
    receiver.up()
    # the new call's events are due at once; those that failed wait their 5 s
    assert _pass(tally, t0 + timedelta(seconds=4)).delivered == 3
    assert [g.headers["webhook-id"] for g in receiver.on("/hook")] == [ids[4]]
    report = _pass(tally, t0 + timedelta(seconds=5))
    assert report.delivered == 4 + 4 + 3 and report.retrying == report.parked == 0
    rows = _rows(tally)
    # the webhook: one signed CloudEvent per call
    hooks = receiver.on("/hook")
    assert sorted(g.headers["webhook-id"] for g in hooks) == sorted(ids)
    assert all(g.valid_signature for g in hooks)
    for got in hooks:
        event = got.json
        row = rows[event["id"]]
        assert event["specversion"] == "1.0" and event["source"] == "tally"
        assert event["type"] == "llm.usage"
        assert event["subject"] == ("bob" if event["id"] == ids[3] else "ada")
        data = event["data"]
        assert data["model"] == row.model == "openai/gpt-4o-mini"
        assert data["endpoint"] == "chat" and data["key"] == "web"
        assert (data["prompt_tokens"], data["completion_tokens"]) == (12, 3)
        assert data["cached_tokens"] == 0 and data["cost_usd"] == row.cost == 0.00042
        assert data["cost_source"] == "upstream"
    # OpenMeter: the same CloudEvents, batched, Bearer token
    meter = receiver.on(OPENMETER)
    assert sorted(e["id"] for e in events_of(meter)) == sorted(ids)
    assert all(g.headers["authorization"] == "Bearer om-token" for g in meter)
    assert {g.headers["content-type"] for g in meter} <= {
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
    }
    # Stripe: one form-encoded meter event per call of a user with a customer id
    stripe = receiver.on(STRIPE)
    assert all(g.headers["authorization"] == "Bearer sk_test_123" for g in stripe)
    forms = sorted((g.form for g in stripe), key=lambda f: f["identifier"])
    assert [f["identifier"] for f in forms] == sorted(ids[:3] + ids[4:])
    for form in forms:
        row = rows[form["identifier"]]
        assert form["event_name"] == "llm_tokens"
        assert form["payload[stripe_customer_id]"] == "cus_ada"
        assert form["payload[value]"] == "15"
        assert abs(int(form["timestamp"]) - row.created_at.timestamp()) < 86400
    # delivered once: nothing more goes, however many passes
    assert _pass(tally, t0 + timedelta(minutes=10)).delivered == 0
    assert len(receiver.on("/hook")) == 5


def test_a_refused_event_is_parked_and_the_others_go(tally, receiver, sinks):
    first, second = (chat(tally, identity=IDENTITY).headers["X-Request-Id"] for _ in range(2))
    receiver.refuse[first] = 400
    report = _pass(tally, utcnow())
    assert report.parked == 3 and report.delivered == 3  # one per sink each
    assert [g.headers["webhook-id"] for g in receiver.on("/hook")] == [second]
    parked = [e for e in _events(tally) if e.parked_at is not None]
    assert {e.event_id for e in parked} == {first}
    assert all(e.last_error.startswith("HTTP 400") for e in parked)
    with tally.flask_app.extensions["tally"].sessions() as session:
        assert {s.last_error[:8] for s in session.scalars(select(Sink))} == {"HTTP 400"}


def test_busy_receivers_are_retried_with_backoff(tally, receiver, sinks):
    rid = chat(tally, identity=IDENTITY).headers["X-Request-Id"]
    receiver.statuses = {"/hook": [503, 429, 408, 500]}
    t = utcnow()
    waits = []
    for _ in range(4):
        _pass(tally, t)
        (hook,) = [
            e
            for e in _events(tally)
            if e.event_id == rid
            and e.payload.get("source")
            and e.sink_id == _sink_id(tally, "hook")
        ]
        waits.append((hook.next_attempt_at - t).total_seconds())
        t = hook.next_attempt_at
    assert waits == [5, 10, 20, 40]
    _pass(tally, t)
    assert [g.headers["webhook-id"] for g in receiver.on("/hook")] == [rid]
    assert [retry_delay(n).total_seconds() for n in range(1, 8)] == [5, 10, 20, 40, 60, 60, 60]


def _sink_id(tally, name):
    with tally.flask_app.extensions["tally"].sessions() as session:
        return session.scalar(select(Sink.id).where(Sink.name == name))


def test_an_event_is_given_up_after_three_days(tally, receiver, sinks):
    chat(tally, identity=IDENTITY)
    receiver.down()
    report = _pass(tally, utcnow() + GIVE_UP + timedelta(seconds=1))
    assert report.parked == 3
    assert all(e.last_error.startswith("gave up after 3 days") for e in _events(tally))


def test_a_replayed_batch_makes_no_second_event(tally, receiver, sinks):
    """A batch written twice (the spool replayed, a frame sent again): the row is
    skipped, and so are its events, the unique (sink, event id) aside."""
    call = CallRecord("r" * 32, None, None, None, None, "m", False)
    outcome = Outcome(usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3})
    runtime = tally.flask_app.extensions["tally"]
    for _ in range(2):
        with runtime.sessions() as session:
            record_calls(session, [(call, outcome, utcnow())])
    assert sorted(e.event_id for e in _events(tally)) == ["r" * 32] * 2  # hook and meter
    with runtime.sessions() as session:  # and the outbox itself ignores a second copy
        rows = [{"request_id": "r" * 32, "created_at": utcnow(), "total_tokens": 3}]
        assert enqueue_usage(session.connection(), rows) == 2
        session.commit()
    assert len(_events(tally)) == 2
    report = _pass(tally, utcnow())
    assert report.delivered == 2
    assert receiver.on("/hook")[0].json["subject"] == "anonymous"


def test_refused_calls_send_nothing(tally, receiver, sinks):
    bad = chat(tally, {"model": "x", "messages": "not a list"})
    assert bad.status_code == 400
    assert _events(tally) == []


def test_a_sink_added_elsewhere_is_seen_by_the_next_batch(tally, receiver):
    """The writer's list of sinks follows the caches' shared version: a sink committed by
    any process (here, a session of the runtime, with no local invalidation) gets the
    very next call's event, not one a second later."""
    runtime = tally.flask_app.extensions["tally"]
    assert chat(tally, user="ada").status_code == 200  # the list, empty, is now cached
    with runtime.sessions() as session:
        session.add(
            Sink(name="late", kind="openmeter", url=receiver.url, events="usage", created_by="t")
        )
        session.commit()
    rid = chat(tally, user="ada").headers["X-Request-Id"]
    assert [e.event_id for e in _events(tally)] == [rid]


def test_an_erased_user_leaves_no_trace_in_the_outbox(tally, receiver, sinks):
    delivered = chat(tally, user="ada-lovelace").headers["X-Request-Id"]
    assert _pass(tally, utcnow()).delivered == 2  # the webhook and OpenMeter
    waiting = chat(tally, user="ada-lovelace").headers["X-Request-Id"]
    other = chat(tally, user="bob").headers["X-Request-Id"]
    result = tally.flask_app.test_cli_runner().invoke(args=["users", "erase", "ada-lovelace"])
    assert result.exit_code == 0, result.output
    events = _events(tally)
    assert delivered not in {e.event_id for e in events}
    assert all("ada-lovelace" not in str(e.payload) for e in events)
    kept = [e for e in events if e.event_id == waiting]
    assert len(kept) == 2 and {e.payload["subject"] for e in kept} == {"erased"}
    assert kept[0].payload["data"]["prompt_tokens"] == 12  # the figures stay owed
    assert {e.payload["subject"] for e in events if e.event_id == other} == {"bob"}
