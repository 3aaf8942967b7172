"""Traces (PRODUCT.md, "Traces (OpenTelemetry)"): with an OTLP endpoint set, every API call
is one span, exported over OTLP/HTTP protobuf to a real loopback collector, with the GenAI
attributes, the pseudonymous end user, in the caller's trace, the trace carried on to the
upstream; without one, nothing is exported and nothing goes upstream."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from tally.keys.api_keys import create_api_key
from tests.helpers.api import body_of, chat, embed, respond
from tests.helpers.collector import Exported
from tests.helpers.gunicorn import ROOT
from tests.helpers.limits import set_limits
from tests.helpers.loopback import free_port
from tests.helpers.payloads import (
    chunks,
    completion,
    embedding_answer,
    response_events,
    response_object,
)
from tests.helpers.rows import configure, request_rows
from tests.helpers.waiting import wait_for

SERVER, ERROR = 2, 2  # the proto's SpanKind.SPAN_KIND_SERVER, Status.STATUS_CODE_ERROR
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
SDK_MODULES = (
    "opentelemetry.sdk.trace",
    "opentelemetry.exporter",
    "opentelemetry.proto",
    "tally.traces.spans",
)


def span_of(collector, response) -> Exported:
    """The one span exported for the call ``response`` answered."""
    request_id = response.headers["X-Request-Id"]

    def found():
        spans = [s for s in collector.spans if s.attributes["tally.request_id"] == request_id]
        assert len(spans) <= 1, spans
        return spans[0] if spans else None

    return wait_for(found, timeout=10)


def test_a_chat_call_is_one_span_with_the_genai_attributes(traced, collector, upstream):
    response = chat(traced, user="ada")
    assert response.status_code == 200
    span = span_of(collector, response)
    sent = upstream.last.body["user"]
    assert sent.startswith("tally_") and "ada" not in sent
    assert span.name == "chat openai/gpt-4o-mini"
    assert span.kind == SERVER
    assert span.attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "openai/gpt-4o-mini",
        "gen_ai.response.model": "openai/gpt-4o-mini",
        "gen_ai.response.id": "gen-fake-1",
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 3,
        "enduser.pseudo.id": sent,
        "tally.request_id": response.headers["X-Request-Id"],
        "tally.key": "web",
        "http.response.status_code": 200,
    }
    assert span.status_code != ERROR
    assert span.parent_span_id == ""  # no caller's trace: a trace of its own
    assert span.resource["service.name"] == "tally"
    assert span.scope == "tally.proxy"


def test_the_response_model_is_the_upstreams(traced, collector, upstream):
    upstream.reply(json=completion(model="openai/gpt-4o-mini-2024-07-18"))
    response = chat(traced, model="openai/gpt-4o-mini")
    span = span_of(collector, response)
    assert span.attributes["gen_ai.request.model"] == "openai/gpt-4o-mini"
    assert span.attributes["gen_ai.response.model"] == "openai/gpt-4o-mini-2024-07-18"
    assert "enduser.pseudo.id" not in span.attributes  # no end user: nothing sent


def test_a_streams_span_ends_when_the_stream_ends(traced, collector, upstream):
    upstream.reply(events=chunks(["Hel", "lo"]), delay=0.2)  # five events, a second
    response = chat(traced, user="ada", stream=True)
    assert response.status_code == 200
    assert body_of(response).rstrip().endswith(b"data: [DONE]")
    span = span_of(collector, response)
    assert span.seconds >= 0.9
    assert span.name == "chat openai/gpt-4o-mini"
    attributes = span.attributes
    assert attributes["gen_ai.usage.input_tokens"] == 9  # from the stream's last chunk
    assert attributes["gen_ai.usage.output_tokens"] == 2
    assert attributes["gen_ai.response.id"] == "gen-fake-2"
    assert attributes["gen_ai.response.model"] == "openai/gpt-4o-mini"
    assert attributes["enduser.pseudo.id"] == upstream.last.body["user"]
    assert attributes["http.response.status_code"] == 200
    assert "error.type" not in attributes


def test_a_stream_cut_by_the_client_ends_its_span_as_499(traced, collector, upstream):
    hold = threading.Event()
    upstream.reply(events=[*chunks(["Hel"])[:2], hold, *chunks(["Hel"])[2:]])
    response = chat(traced, user="ada", stream=True)
    next(response.iter_content(chunk_size=None))  # the first event arrived
    response.close()
    time.sleep(0.2)
    hold.set()  # more to relay: the relay finds the client gone
    span = span_of(collector, response)
    assert span.attributes["http.response.status_code"] == 499
    assert span.attributes["error.type"] == "client_disconnected"
    assert span.status_code == ERROR


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_responses_call_is_a_chat_span(traced, collector, upstream, stream):
    if stream:
        upstream.reply(events=response_events(["Hel", "lo"]), done=False)
    else:
        upstream.reply(json=response_object())
    response = respond(traced, user="ada", stream=stream)
    assert response.status_code == 200
    body_of(response)
    span = span_of(collector, response)
    assert span.name == "chat openai/gpt-4o-mini"
    assert span.attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "openai/gpt-4o-mini",
        "gen_ai.response.model": "openai/gpt-4o-mini",
        "gen_ai.response.id": "resp_fake_1",
        "gen_ai.usage.input_tokens": 11,
        "gen_ai.usage.output_tokens": 2,
        "gen_ai.usage.cache_read.input_tokens": 4,
        "enduser.pseudo.id": upstream.last.body["user"],
        "tally.request_id": response.headers["X-Request-Id"],
        "tally.key": "web",
        "http.response.status_code": 200,
    }


def test_an_embeddings_call_is_an_embeddings_span(traced, collector, upstream):
    upstream.reply(json=embedding_answer(2))
    response = embed(traced, user="ada")
    assert response.status_code == 200
    span = span_of(collector, response)
    assert span.name == "embeddings openai/text-embedding-3-small"
    assert span.attributes == {
        "gen_ai.operation.name": "embeddings",
        "gen_ai.request.model": "openai/text-embedding-3-small",
        "gen_ai.response.model": "openai/text-embedding-3-small",
        "gen_ai.usage.input_tokens": 5,
        "gen_ai.usage.output_tokens": 0,  # an embedding generates no tokens
        "enduser.pseudo.id": upstream.last.body["user"],
        "tally.request_id": response.headers["X-Request-Id"],
        "tally.key": "web",
        "http.response.status_code": 200,
    }


@pytest.mark.parametrize(
    "script",
    [
        {"status": 429, "json": {"error": {"message": "slow down", "code": 429}}},
        {"status": 500, "raw": b"<html>oops</html>"},
        {"hang": 3},  # past TALLY_UPSTREAM_TIMEOUT (2 s): a 504 of Tally's
    ],
    ids=["upstream-429", "upstream-500", "timeout"],
)
def test_an_upstream_failure_is_an_error_span(traced, collector, upstream, script):
    upstream.reply(**script)
    response = chat(traced, user="ada")
    assert response.status_code >= 400
    span = span_of(collector, response)
    [row] = wait_for(lambda: request_rows(traced.flask_app))
    assert span.status_code == ERROR
    assert span.attributes["http.response.status_code"] == response.status_code == row.status
    assert span.attributes["error.type"] == row.error_code
    assert span.attributes["enduser.pseudo.id"] == upstream.last.body["user"]
    assert span.name == "chat openai/gpt-4o-mini"


def test_an_unreachable_upstream_is_an_error_span(otel_env, collector, serve_tally):
    server = serve_tally("http://127.0.0.1:9/api/v1")  # nothing listens there
    response = chat(server, user="ada")
    assert response.status_code == 502
    span = span_of(collector, response)
    assert span.attributes["http.response.status_code"] == 502
    assert span.attributes["error.type"] == response.json()["error"]["code"]
    assert span.status_code == ERROR


def test_a_refused_body_is_a_span_too(traced, collector, upstream):
    response = chat(traced, body={"model": "openai/gpt-4o-mini", "user": "ada"})  # no messages
    assert response.status_code == 400
    span = span_of(collector, response)
    [row] = request_rows(traced.flask_app)
    assert row.refused
    assert span.name == "chat openai/gpt-4o-mini"
    assert span.attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "openai/gpt-4o-mini",
        "tally.request_id": response.headers["X-Request-Id"],
        "tally.key": "web",
        "http.response.status_code": 400,
        "error.type": row.error_code,
    }
    assert span.status_code == ERROR
    assert upstream.requests == []


def test_a_body_that_is_not_json_is_a_span_named_by_its_operation(traced, collector):
    response = chat(traced, body=b"{not json")
    assert response.status_code == 400
    span = span_of(collector, response)
    assert span.name == "chat"
    assert span.attributes["http.response.status_code"] == 400
    assert span.attributes["error.type"] == request_rows(traced.flask_app)[0].error_code
    assert "gen_ai.request.model" not in span.attributes


def test_a_limit_refusal_is_an_error_span_of_the_end_user(traced, collector, upstream):
    set_limits(traced.flask_app, "tier:default", "messages=1")
    assert chat(traced, user="ada").status_code == 200
    sent = upstream.last.body["user"]
    refused = chat(traced, user="ada")
    assert refused.status_code == 429
    span = span_of(collector, refused)
    assert span.attributes["http.response.status_code"] == 429
    assert span.attributes["error.type"] == refused.json()["error"]["code"]
    assert span.attributes["enduser.pseudo.id"] == sent  # whom the limit held
    assert "gen_ai.usage.input_tokens" not in span.attributes
    assert span.status_code == ERROR
    assert len(upstream.requests) == 1


def test_a_model_no_exporter_can_encode_does_not_lose_the_batch(traced, collector, upstream):
    bad = chat(traced, body={"model": "gpt\ud800", "messages": [{"role": "user", "content": "x"}]})
    good = chat(traced, user="ada")
    assert (bad.status_code, good.status_code) == (400, 200)
    assert span_of(collector, bad).name == "chat gpt?"
    assert span_of(collector, good).attributes["http.response.status_code"] == 200


@pytest.mark.parametrize(
    "send",
    [
        lambda tally, headers: chat(tally, headers=headers, user="ada"),
        lambda tally, headers: chat(tally, headers=headers, user="ada", stream=True),
        lambda tally, headers: respond(tally, headers=headers, user="ada"),
        lambda tally, headers: embed(tally, headers=headers, user="ada"),
    ],
    ids=["chat", "chat-stream", "responses", "embeddings"],
)
def test_a_callers_trace_is_continued_and_carried_upstream(traced, collector, upstream, send):
    if "embeddings" in str(send.__code__.co_names):
        upstream.reply(json=embedding_answer(2))
    headers = {
        "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01",
        "tracestate": "vendor=opaque",
        "HTTP-Referer": "https://app.example/",
    }
    response = send(traced, headers)
    body_of(response)
    span = span_of(collector, response)
    assert (span.trace_id, span.parent_span_id) == (CALLER_TRACE, CALLER_SPAN)
    received = upstream.last.headers
    assert received["Traceparent"] == f"00-{CALLER_TRACE}-{span.span_id}-01"
    assert received["Tracestate"] == "vendor=opaque"
    assert received["Http-Referer"] == "https://app.example/"  # still passed on


def test_without_a_callers_trace_the_upstream_gets_the_spans_own(traced, collector, upstream):
    response = chat(traced, headers={"traceparent": "00-" + "0" * 32 + "-" + "1" * 16 + "-01"})
    span = span_of(collector, response)  # an invalid traceparent: ignored
    assert span.parent_span_id == "" and span.trace_id != "0" * 32
    version, trace, parent, flags = upstream.last.headers["Traceparent"].split("-")
    assert (version, trace, parent) == ("00", span.trace_id, span.span_id)
    assert int(flags, 16) & 1  # sampled (the SDK marks its own trace ids random too: 03)
    assert "Tracestate" not in upstream.last.headers


@pytest.mark.parametrize("mode", ["hmac-sha256", "sha256"])
def test_the_pseudonym_is_the_identifier_sent_never_the_user(traced, collector, upstream, mode):
    configure(traced.flask_app, hash_mode=mode)
    identity = {"id": "cust-8841", "email": "alice@example.com", "display_name": "Alice Liddell"}
    response = chat(traced, identity=identity)
    assert response.status_code == 200
    span = span_of(collector, response)
    sent = upstream.last.body["user"]
    assert span.attributes["enduser.pseudo.id"] == sent
    assert "cust-8841" not in sent
    exported = b"".join(collector.bodies)
    for secret in ("cust-8841", "alice@example.com", "Alice Liddell", "Alice", "8841"):
        assert secret.encode() not in exported
    [row] = request_rows(traced.flask_app)
    assert str(row.user_id).encode() != sent.encode()


def test_the_operators_otel_variables_are_honoured(otel_env, monkeypatch, serve_tally, upstream):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gateway-eu")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-honeycomb-team=hc-key")
    server = serve_tally(upstream.url)
    response = chat(server, user="ada")
    span = span_of(otel_env, response)
    assert span.resource["service.name"] == "gateway-eu"
    assert span.resource["deployment.environment"] == "staging"
    assert otel_env.headers[-1]["X-Honeycomb-Team"] == "hc-key"


def test_the_traces_endpoint_alone_turns_them_on(collector, monkeypatch, serve_tally, upstream):
    _clear_otel(monkeypatch)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", collector.url + "/v1/traces")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    server = serve_tally(upstream.url)
    assert span_of(collector, chat(server)).attributes["http.response.status_code"] == 200


def test_a_sampled_out_call_is_not_exported_but_its_trace_goes_on(
    otel_env, monkeypatch, serve_tally, upstream
):
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    server = serve_tally(upstream.url)
    headers = {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}
    assert chat(server, headers=headers).status_code == 200
    version, trace, span, flags = upstream.last.headers["Traceparent"].split("-")
    assert (version, trace, flags) == ("00", CALLER_TRACE, "00")
    assert span != CALLER_SPAN
    time.sleep(0.5)
    assert otel_env.spans == []


def test_without_an_endpoint_nothing_is_exported_nor_sent_upstream(
    collector, monkeypatch, serve_tally, upstream
):
    _clear_otel(monkeypatch)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")  # set, but no endpoint: off
    server = serve_tally(upstream.url)
    assert server.flask_app.extensions["tally"].pipeline.tracer is None
    headers = {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01", "tracestate": "v=1"}
    assert chat(server, headers=headers, user="ada").status_code == 200
    assert chat(server, body={"model": "m"}).status_code == 400
    received = {name.lower() for name in upstream.last.headers}
    assert "traceparent" not in received and "tracestate" not in received
    time.sleep(0.5)
    assert collector.bodies == []


def test_with_traces_off_the_request_path_never_imports_the_sdk():
    # redis-py imports OpenTelemetry's metrics SDK for its own (opt-in) metrics when it is
    # installed: only the tracing SDK, its exporter and tally.traces.spans are Tally's
    code = (
        "import sys, app, blueprints.api.v1, tally.proxy.pipeline, tally.runtime.process\n"
        "print(sorted(m for m in sys.modules if m.startswith(PREFIXES)))\n"
    ).replace("PREFIXES", repr(SDK_MODULES))
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _clear_otel(monkeypatch) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


def test_the_variables_can_come_as_the_apps_overrides(
    collector, monkeypatch, make_app, serve, upstream
):
    _clear_otel(monkeypatch)
    flask_app = make_app(
        TALLY_UPSTREAM_URL=upstream.url,
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.url,
        OTEL_BSP_SCHEDULE_DELAY="50",
        OTEL_SERVICE_NAME="from-overrides",
    )
    tracer = flask_app.extensions["tally"].pipeline.tracer
    server = serve(flask_app)
    with flask_app.extensions["tally"].sessions() as session:
        _, server.key = create_api_key(session, "web", "test")
    try:
        span = span_of(collector, chat(server, user="ada"))
    finally:
        tracer.close(timeout=5)
    assert span.resource["service.name"] == "from-overrides"
    assert span.attributes["enduser.pseudo.id"] == upstream.last.body["user"]
    assert not [name for name in os.environ if name.startswith("OTEL_")]  # as it was
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in flask_app.config


def test_a_collector_that_is_down_costs_no_call_anything(monkeypatch, serve_tally, upstream):
    _clear_otel(monkeypatch)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "10")  # exports fail all along
    # A call that waited on an export would wait the export's 4 s timeout; a call on a
    # loaded CI machine can take over a second on its own (1.18 s seen once at 1 s).
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "4")
    server = serve_tally(upstream.url)
    for _ in range(5):
        started = time.monotonic()
        response = chat(server, user="ada")
        assert response.status_code == 200
        assert time.monotonic() - started < 2.0
    assert "Traceparent" in upstream.last.headers
