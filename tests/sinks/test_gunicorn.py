"""Under gunicorn, as deployed: the usage writer process writes each call's event with its
row and its delivery loop sends it; a receiver taken down for a while during traffic gets
every answered call's event once it is back, once per event id, signed; and so it does
when Tally is restarted during the outage."""

from __future__ import annotations

import time

import requests
from sqlalchemy import select

from tally.models import Sink
from tally.sinks.admin import add_sink
from tests.helpers.gunicorn import start_gunicorn, stop, tally_env
from tests.helpers.sink_outage import Scenario, run
from tests.helpers.waiting import wait_for


def test_the_writer_process_delivers_through_an_outage(gunicorn, app, make_key, receiver):
    runtime = app.extensions["tally"]
    with runtime.sessions() as session:
        _, secret = add_sink(
            session, runtime.settings.secret_key, "hook", "webhook", receiver.url + "/hook", "t"
        )
    receiver.webhook_secret = secret
    key = make_key()

    def call(user: str) -> str:
        response = requests.post(
            gunicorn.url + "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "user": user},
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert response.status_code == 200
        return response.headers["X-Request-Id"]

    ids = [call(f"u{n}") for n in range(3)]
    assert wait_for(lambda: len(receiver.on("/hook")) == 3, timeout=20)
    receiver.down()
    ids += [call(f"v{n}") for n in range(4)]
    time.sleep(2)  # the loop tries, fails, backs off
    receiver.up()
    assert wait_for(lambda: len(receiver.on("/hook")) >= 7, timeout=30)
    time.sleep(1.5)  # nothing more comes
    hooks = receiver.on("/hook")
    assert sorted(g.headers["webhook-id"] for g in hooks) == sorted(ids)
    assert all(g.valid_signature for g in hooks)
    assert {g.json["subject"] for g in hooks} == {"u0", "u1", "u2", "v0", "v1", "v2", "v3"}
    with runtime.sessions() as session:
        sink = session.scalars(select(Sink)).one()
        assert sink.last_delivered_at is not None
        assert sink.last_error is not None and "connect" in sink.last_error


def test_no_event_is_lost_to_a_receiver_outage_and_a_restart(
    gunicorn, database_url, upstream, app, make_key, receiver
):
    """Issue 21's chaos run, in seconds (bench/sinks_chaos.py runs it for minutes): the
    receiver down under load, Tally stopped and started meanwhile, then back."""
    runtime = app.extensions["tally"]
    with runtime.sessions() as session:
        _, receiver.webhook_secret = add_sink(
            session, runtime.settings.secret_key, "hook", "webhook", receiver.url + "/hook", "t"
        )
    stop(gunicorn)  # the scenario starts its own, twice
    env = tally_env(database_url, TALLY_UPSTREAM_URL=upstream.url)
    scenario = Scenario(warmup=1.5, outage=5.0, after=1.5, threads=3, drain_timeout=60)
    figures = run(lambda: start_gunicorn(env), make_key(), receiver, scenario)
    assert figures["answered (200)"] > 20
    assert figures["lost (answered 200, no event)"] == 0
    assert figures["bad signatures"] == 0
    assert figures["other statuses"] == 0
    # the backlog went as soon as the receiver was back (not a backoff of up to 60 s)
    assert figures["backlog drained after the receiver returned (s)"] < 10
