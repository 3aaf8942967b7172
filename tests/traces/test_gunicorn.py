"""Traces under the shipped gunicorn config: each gevent worker sets up its own exporter
after the fork (no preload: the app, and the SDK on its first span, are built in the
worker), spans leave from the worker's batch thread while it serves, and the spans a
worker still holds are exported when it stops (gunicorn's worker_exit)."""

from __future__ import annotations

import time

import requests

from tally.keys.api_keys import create_api_key
from tests.helpers.api import BASE
from tests.helpers.gunicorn import start_gunicorn, stop, tally_env
from tests.helpers.payloads import chunks


def _start(database_url, upstream, collector, delay_ms: int, workers: int):
    return start_gunicorn(
        tally_env(
            database_url,
            TALLY_UPSTREAM_URL=upstream.url,
            OTEL_EXPORTER_OTLP_ENDPOINT=collector.url,
            OTEL_BSP_SCHEDULE_DELAY=str(delay_ms),
            OTEL_SERVICE_NAME="tally-under-gunicorn",
        ),
        workers=workers,
    )


def _key(app) -> str:
    with app.extensions["tally"].sessions() as session:
        return create_api_key(session, "web", "test")[1]


def _call(url: str, key: str, **extra) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}", "X-Tally-User": "ada"}
    return requests.post(
        url + "/v1/chat/completions", json={**BASE, **extra}, headers=headers, timeout=30
    )


def test_every_worker_exports_its_spans_while_it_serves(database_url, upstream, collector, app):
    key = _key(app)
    proc = _start(database_url, upstream, collector, delay_ms=100, workers=2)
    try:
        upstream.reply(events=chunks(["Hel", "lo"]), delay=0.1)
        streamed = _call(proc.url, key, stream=True)
        answers = [streamed] + [_call(proc.url, key) for _ in range(5)]
        assert [a.status_code for a in answers] == [200] * 6
        spans = collector.wait(6, timeout=30)  # while gunicorn still runs
    finally:
        stop(proc)
    by_id = {s.attributes["tally.request_id"]: s for s in spans}
    assert set(by_id) == {a.headers["X-Request-Id"] for a in answers}
    stream_span = by_id[streamed.headers["X-Request-Id"]]
    assert stream_span.seconds >= 0.4  # five events 0.1 s apart: ended with the stream
    assert stream_span.attributes["gen_ai.usage.output_tokens"] == 2
    sent = {r.body["user"] for r in upstream.requests}
    assert {s.attributes["enduser.pseudo.id"] for s in spans} == sent
    assert {s.resource["service.name"] for s in spans} == {"tally-under-gunicorn"}
    assert len({s.trace_id for s in spans}) == 6
    traceparents = {r.headers["Traceparent"].split("-")[1] for r in upstream.requests}
    assert traceparents == {s.trace_id for s in spans}


def test_a_stopping_worker_exports_the_spans_it_holds(database_url, upstream, collector, app):
    key = _key(app)
    # a batch every ten minutes: only the worker's exit can send these
    proc = _start(database_url, upstream, collector, delay_ms=600_000, workers=1)
    try:
        answers = [_call(proc.url, key) for _ in range(3)]
        assert [a.status_code for a in answers] == [200] * 3
        time.sleep(0.5)
        assert collector.spans == []
    finally:
        assert stop(proc) == 0
    spans = collector.wait(3, timeout=5)
    assert {s.attributes["tally.request_id"] for s in spans} == {
        a.headers["X-Request-Id"] for a in answers
    }
