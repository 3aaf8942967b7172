"""``/sinks`` in the console: an admin adds a sink (a webhook's generated secret shown
once, never again), sees each sink's backlog, oldest undelivered event, last error and
parked events, replays a day, removes one; support sees the page and changes nothing;
bad and hostile input is a form message (422)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from tally.db import utcnow
from tally.models import AuditEntry, RequestLog, Sink, SinkEvent
from tally.sinks.delivery import deliver_pass
from tests.helpers.console import text

# the test sends with deliver_pass, at the time it says: no loop of the app's races it
pytestmark = pytest.mark.manual_delivery

SECRET = re.compile(r'id="new-sink-secret" readonly value="(whsec_[^"]+)"')
HOOK = {"name": "hook", "kind": "webhook", "url": "https://hooks.example/tally"}


@pytest.mark.parametrize("htmx", [True, False])
def test_an_admin_adds_a_webhook_and_sees_its_secret_once(admin, db, htmx):
    response = admin.post("/sinks", {**HOOK, "events": "usage"}, htmx=htmx)
    assert response.status_code == 201
    page = text(response)
    secret = SECRET.search(page).group(1)
    sink = db.scalars(select(Sink)).one()
    assert (sink.name, sink.kind, sink.url, sink.events) == (
        "hook",
        "webhook",
        HOOK["url"],
        "usage",
    )
    again = text(admin.get("/sinks"))
    assert 'data-sink="hook"' in again and secret not in again
    assert "whsec_" not in again
    entry = db.scalars(select(AuditEntry).where(AuditEntry.action.startswith("sink."))).one()
    assert (entry.action, entry.actor, entry.target) == ("sink.add", admin.email, "hook")
    assert secret not in str(entry.after)


def test_the_nav_links_the_page_for_both_roles(admin, support):
    for console in (admin, support):
        assert 'href="/sinks"' in text(console.get("/"))


def test_a_stripe_secret_typed_is_never_shown(admin, db):
    form = {
        "name": "bill",
        "kind": "stripe",
        "url": "https://api.stripe.com",
        "secret": "sk_live_9",
    }
    page = text(admin.post("/sinks", {**form, "events": "usage"}))
    assert "sk_live_9" not in page and "sk_live_9" not in text(admin.get("/sinks"))
    # refused with the secret typed: the form comes back without it
    refused = admin.post("/sinks", {**form, "url": "nope"})
    assert refused.status_code == 422 and "sk_live_9" not in text(refused)


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({**HOOK, "url": "https://x.example/\ufffd"}, "url must be an http:// or https:// URL"),
        ({**HOOK, "name": "n" * 5000}, "name must be at most 100 characters"),
        ({**HOOK, "url": "https://x.example/" + "p" * 100_000}, "url must be at most 2048"),
        ({**HOOK, "url": "javascript:alert(1)"}, "url must be an http:// or https:// URL"),
        ({**HOOK, "kind": "ftp"}, "kind must be one of stripe, openmeter, webhook, slack"),
        ({**HOOK, "name": "<b>x</b>"}, "a sink name must be 1 to 100 of letters"),
    ],
)
def test_bad_and_hostile_input_is_a_form_message(admin, db, form, message):
    response = admin.post("/sinks", form, htmx=True)
    assert response.status_code == 422
    assert message in text(response)
    assert db.scalars(select(Sink)).all() == []


def test_a_nul_is_refused(admin, db):
    """A NUL is a 400 on every console route (tests/console/test_every_route.py)."""
    nul = admin.post("/sinks", {**HOOK, "name": "a\x00b"}, htmx=True)
    assert nul.status_code == 400 and "NUL" in text(nul)
    assert db.scalars(select(Sink)).all() == []


def test_support_sees_the_list_and_changes_nothing(admin, support, db):
    admin.post("/sinks", HOOK)
    page = text(support.get("/sinks"))
    assert 'data-sink="hook"' in page and "Add a sink" not in page
    sink_id = db.scalar(select(Sink.id))
    assert support.post("/sinks", {**HOOK, "name": "other"}).status_code == 403
    assert support.post(f"/sinks/{sink_id}/remove").status_code == 403
    assert support.post(f"/sinks/{sink_id}/replay", {"from": "2020-01-01"}).status_code == 403
    assert db.scalars(select(Sink.name)).all() == ["hook"]


def test_the_list_shows_backlog_oldest_last_error_and_parked(app, admin, db, receiver):
    admin.post("/sinks", {**HOOK, "url": receiver.url + "/hook"})
    sink_id = db.scalar(select(Sink.id))
    now = utcnow()
    for n in range(3):
        db.add(
            SinkEvent(
                sink_id=sink_id,
                event_id=f"req{n}",
                type="llm.usage",
                payload={"id": f"req{n}"},
                created_at=now - timedelta(minutes=n),
                next_attempt_at=now,
            )
        )
    db.commit()
    receiver.refuse = {f"req{n}": 404 for n in range(3)}
    runtime = app.extensions["tally"]
    report = deliver_pass(runtime.sessions, runtime.settings.secret_key, now=now)
    assert report.parked == 3  # the receiver answers 404 to each
    db.add(
        SinkEvent(
            sink_id=sink_id,
            event_id="req9",
            type="llm.usage",
            payload={},
            created_at=now - timedelta(hours=2),
            next_attempt_at=now,
        )
    )
    db.commit()
    page = text(admin.get("/sinks"))
    row = page.split('data-sink="hook"')[1].split("</tr>")[0]
    assert 'data-label="Backlog" class="num">1<' in row
    assert (now - timedelta(hours=2)).strftime("%Y-%m-%d %H:%M UTC") in row
    assert "HTTP 404" in row
    assert 'data-label="Parked" class="num">3<' in row
    assert "Parked events of hook" in page and "<code>req0</code>" in page


def test_replay_and_remove(admin, db):
    admin.post("/sinks", HOOK)
    sink_id = db.scalar(select(Sink.id))
    db.add(RequestLog(request_id="r1", created_at=utcnow(), status=200, total_tokens=5))
    db.commit()
    day = utcnow().date().isoformat()
    response = admin.post(f"/sinks/{sink_id}/replay", {"from": day}, htmx=True)
    assert "Queued 1 events for sink &#39;hook&#39;." in text(response)
    assert db.scalars(select(SinkEvent.event_id)).all() == ["r1"]
    bad = admin.post(f"/sinks/{sink_id}/replay", {"from": "last week"}, htmx=True)
    assert bad.status_code == 422 and "--from must be a day, YYYY-MM-DD" in text(bad)
    response = admin.post(f"/sinks/{sink_id}/remove", htmx=True)
    assert "Removed sink &#39;hook&#39; (1 undelivered events dropped)." in text(response)
    assert db.scalars(select(Sink)).all() == [] and db.scalars(select(SinkEvent)).all() == []
    assert admin.post("/sinks/999999/remove").status_code == 404


def test_metrics_show_backlog_age_and_deliveries_without_user_labels(app, admin, db, receiver):
    admin.post("/sinks", {**HOOK, "url": receiver.url + "/hook"})
    sink_id = db.scalar(select(Sink.id))
    now = utcnow()
    for n in range(2):
        db.add(
            SinkEvent(
                sink_id=sink_id,
                event_id=f"m{n}",
                type="llm.usage",
                payload={"id": f"m{n}"},
                created_at=now - timedelta(seconds=90),
                next_attempt_at=now + timedelta(hours=1) if n else now,
            )
        )
    db.commit()
    runtime = app.extensions["tally"]
    deliver_pass(runtime.sessions, runtime.settings.secret_key, now=now)
    body = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'tally_sink_backlog_events{sink="hook"} 1.0' in body
    age = re.search(r'tally_sink_oldest_undelivered_seconds\{sink="hook"\} ([0-9.]+)', body)
    assert 90 <= float(age.group(1)) < 200
    assert 'tally_sink_deliveries_total{outcome="delivered",sink="hook"}' in body
