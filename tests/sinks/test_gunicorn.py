"""Under gunicorn, as deployed: the usage writer process writes each call's event with its
row and its delivery loop sends it; a receiver taken down for a while during traffic gets
every answered call's event once it is back, once per event id, signed."""

from __future__ import annotations

import time

import requests
from sqlalchemy import select

from tally.models import Sink
from tally.sinks.admin import add_sink
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
