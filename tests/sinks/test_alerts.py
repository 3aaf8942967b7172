"""Limit alerts: a user's (or a key's) use crossing 80 % and 100 % of a limit in its
window sends one ``tally.limit.threshold`` event per threshold to the alert sinks (a
signed webhook, Slack), once however many calls follow."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tally.limits.policy_store import set_policy
from tally.models import SinkEvent
from tally.sinks.admin import add_sink
from tally.sinks.delivery import deliver_pass
from tests.helpers.api import chat

# the test sends with deliver_pass, at the time it says: no loop of the app's races it
pytestmark = pytest.mark.manual_delivery


def _setup(tally, receiver):
    runtime = tally.flask_app.extensions["tally"]
    key = runtime.settings.secret_key
    with runtime.sessions() as session:
        _, secret = add_sink(
            session, key, "ops", "webhook", receiver.url + "/hook", "t", events="alerts"
        )
        add_sink(session, key, "chat", "slack", receiver.url + "/slack", "t")
        add_sink(session, key, "usage-only", "webhook", receiver.url + "/usage", "t")
        set_policy(session, "user:ada", {"messages": 5}, "t")
        set_policy(session, "key:web", {"messages": 10}, "t")
        session.commit()
    receiver.webhook_secret = secret
    return runtime


def test_each_threshold_alerts_once(tally, receiver):
    runtime = _setup(tally, receiver)
    statuses = [chat(tally, user="ada").status_code for _ in range(7)]
    assert statuses == [200] * 5 + [429] * 2
    deliver_pass(runtime.sessions, runtime.settings.secret_key)
    hooks = receiver.on("/hook")
    alerts = sorted(
        ((g.json["data"]["scope"], g.json["data"]["threshold"]) for g in hooks),
    )
    assert alerts == [("user:ada", 80), ("user:ada", 100)]
    assert all(g.valid_signature for g in hooks)
    first = next(g.json for g in hooks if g.json["data"]["threshold"] == 80)
    assert first["type"] == "tally.limit.threshold" and first["source"] == "tally"
    data = first["data"]
    assert (data["limit"], data["used"], data["limit_value"]) == ("messages", 4, 5)
    assert data["window_end"].endswith("Z")
    slack = [g.json["text"] for g in receiver.on("/slack")]
    assert len(slack) == 2
    assert any("user:ada reached 100% of its messages limit (5 of 5" in t for t in slack)
    assert receiver.on("/usage") and all(
        g.json["type"] == "llm.usage" for g in receiver.on("/usage")
    )
    # the key crosses 80 % of its own limit with other users' calls
    for n in range(3):
        assert chat(tally, user=f"other{n}").status_code == 200
    deliver_pass(runtime.sessions, runtime.settings.secret_key)
    scopes = sorted(
        (g.json["data"]["scope"], g.json["data"]["threshold"]) for g in receiver.on("/hook")
    )
    assert ("key:web", 80) in scopes and ("key:web", 100) not in scopes
    with runtime.sessions() as session:
        ids = session.scalars(
            select(SinkEvent.event_id).where(SinkEvent.type == "tally.limit.threshold")
        ).all()
    # one event per alert and alert sink (the webhook and Slack), never a second
    assert len(set(ids)) == 3 and sorted(ids) == sorted(list(set(ids)) * 2)


def test_no_alert_sink_no_alert_events(tally, receiver):
    runtime = tally.flask_app.extensions["tally"]
    with runtime.sessions() as session:
        set_policy(session, "user:ada", {"messages": 1}, "t")
        session.commit()
    assert chat(tally, user="ada").status_code == 200
    with runtime.sessions() as session:
        assert session.scalars(select(SinkEvent)).all() == []
