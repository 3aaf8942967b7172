"""Traces: a loopback OTLP/HTTP collector (``collector``), the OTEL_* variables pointing
at it (``otel_env``), and Tally over real HTTP exporting to it (``traced``; or built by
``serve_tally`` once a test has set the environment its way)."""

from __future__ import annotations

import os

import pytest

from tally.keys.api_keys import create_api_key
from tests.helpers.collector import Collector


@pytest.fixture
def collector():
    """An OTLP/HTTP collector on a loopback port."""
    found = Collector()
    yield found
    found.close()


@pytest.fixture
def otel_env(collector, monkeypatch):
    """OpenTelemetry's variables as an operator sets them, pointing at ``collector``; the
    batch processor exports every 50 ms instead of every 5 s."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    return collector


@pytest.fixture
def traced(otel_env, tally):
    """``tally`` (the fixture) built with ``otel_env`` set: its calls are exported."""
    tracer = tally.flask_app.extensions["tally"].pipeline.tracer
    assert tracer is not None
    yield tally
    tracer.close(timeout=5)


@pytest.fixture
def serve_tally(make_app, serve):
    """Factory: Tally over real HTTP (as the ``tally`` fixture) in front of
    ``upstream_url``, built with the environment as the test has set it; its tracer, if
    any, exports what it holds when the test ends."""
    tracers = []

    def factory(upstream_url: str):
        flask_app = make_app(
            TALLY_UPSTREAM_URL=upstream_url,
            TALLY_UPSTREAM_API_KEY="sk-up-secret",
            TALLY_UPSTREAM_TIMEOUT="2",
        )
        server = serve(flask_app)
        with flask_app.extensions["tally"].sessions() as session:
            _, server.key = create_api_key(session, "web", "test")
        server.flask_app = flask_app
        tracers.append(flask_app.extensions["tally"].pipeline.tracer)
        return server

    yield factory
    for tracer in tracers:
        if tracer is not None:
            tracer.close(timeout=5)
