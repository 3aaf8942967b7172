"""A call reconciled later (a cut OpenRouter stream's real cost arrived) sends one more
event, ``<request id>.corrected`` of type ``llm.usage.corrected``, with the corrected
figures, enqueued in the reconciliation's own transaction: once, however many
reconcilers run."""

from __future__ import annotations

from collections import deque

import pytest

from tally.db import utcnow
from tally.sinks.delivery import deliver_pass
from tests.usage.test_reconcile import FOUND, GEN

# the test sends with deliver_pass, at the time it says: no loop of the app's races it
pytestmark = pytest.mark.manual_delivery


def test_a_reconciled_call_sends_its_corrected_figures_once(
    tally, upstream, receiver, sinks, estimated
):
    runtime = tally.flask_app.extensions["tally"]
    assert deliver_pass(runtime.sessions, runtime.settings.secret_key).delivered == 2
    first = receiver.on("/hook")[0].json
    assert first["id"] == estimated.request_id and first["type"] == "llm.usage"
    assert first["data"]["cost_source"] == "estimated"
    assert (first["data"]["prompt_tokens"], first["data"]["completion_tokens"]) == (7, 2)
    upstream.answers[GEN] = deque([(200, FOUND)])
    runner = tally.flask_app.test_cli_runner()
    assert runner.invoke(args=["usage", "reconcile", "--all"]).exit_code == 0
    assert runner.invoke(args=["usage", "reconcile", "--all"]).exit_code == 0  # nothing more
    report = deliver_pass(runtime.sessions, runtime.settings.secret_key, now=utcnow())
    assert report.delivered == 2  # the webhook and OpenMeter; ada has no Stripe customer
    hooks = receiver.on("/hook")
    assert [g.headers["webhook-id"] for g in hooks] == [
        estimated.request_id,
        f"{estimated.request_id}.corrected",
    ]
    assert hooks[1].valid_signature
    corrected = hooks[1].json
    assert corrected["type"] == "llm.usage.corrected" and corrected["subject"] == "ada"
    data = corrected["data"]
    assert (data["prompt_tokens"], data["completion_tokens"], data["cached_tokens"]) == (9, 5, 3)
    assert data["total_tokens"] == 14 and data["cost_usd"] == 0.0012
    assert data["cost_source"] == "reconciled"
    meter = [
        e
        for g in receiver.on("/api/v1/events")
        for e in ([g.json] if isinstance(g.json, dict) else g.json)
    ]
    assert [e["id"] for e in meter] == [estimated.request_id, f"{estimated.request_id}.corrected"]
