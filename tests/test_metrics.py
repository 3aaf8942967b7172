"""``GET /metrics``: exact counter lines after real calls, the TALLY_METRICS_TOKEN gate,
no per-user label, the bounded model label, and one scrape adding up every gunicorn
worker (multiprocess mode)."""

from __future__ import annotations

import logging
import re

import pytest
import requests

from tally import metrics
from tally.logs import configure_logging
from tests.helpers.api import chat
from tests.helpers.faults import fire
from tests.helpers.gunicorn import start_gunicorn, stop, tally_env
from tests.helpers.limits import set_limits
from tests.helpers.outage import unreachable_database
from tests.helpers.payloads import completion
from tests.helpers.waiting import wait_for

USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 3,
    "total_tokens": 15,
    "prompt_tokens_details": {"cached_tokens": 4},
    "cost": 0.25,
}
END_USER = "user_2N4Z-secret-person"


@pytest.fixture(autouse=True)
def fresh_metrics(monkeypatch):
    """Every labelled series of this process starts from nothing (the registry is the
    process's own, shared by every test), and so do the bounded labels' values."""
    metrics.clear()
    monkeypatch.setattr(metrics, "model_label", metrics.BoundedLabel(metrics.MAX_MODELS))
    monkeypatch.setattr(metrics, "code_label", metrics.BoundedLabel(metrics.MAX_CODES))


def scrape(server, token: str | None = None) -> requests.Response:
    """GET /metrics, with ``token`` as its Bearer token when given."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(server.url + "/metrics", headers=headers, timeout=10)


def test_a_call_and_a_refusal_are_counted_with_exact_labels(tally, upstream):
    set_limits(tally.flask_app, "tier:default", "messages=1")
    upstream.reply(json=completion(usage=USAGE))
    assert chat(tally, user=END_USER).status_code == 200
    refused = chat(tally, user=END_USER)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"

    response = scrape(tally)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    lines = response.text.splitlines()
    model = 'model="openai/gpt-4o-mini"'
    for expected in (
        f'tally_requests_total{{endpoint="chat.completions",{model},status="200"}} 1.0',
        f'tally_tokens_total{{kind="prompt",{model}}} 12.0',
        f'tally_tokens_total{{kind="completion",{model}}} 3.0',
        f'tally_tokens_total{{kind="cached",{model}}} 4.0',
        f"tally_cost_usd_total{{{model}}} 0.25",
        'tally_limit_refusals_total{code="rate_limit_exceeded"} 1.0',
        'tally_request_latency_seconds_count{endpoint="chat.completions"} 1.0',
    ):
        assert expected in lines, expected  # (labels sorted by name)
    assert not any(line.startswith("tally_upstream_errors_total{") for line in lines)
    # The refused call went nowhere: one request counted, not two.
    assert sum(line.startswith("tally_requests_total{") for line in lines) == 1


def test_no_label_names_a_user(tally, upstream):
    upstream.reply(json=completion(usage=USAGE))
    assert chat(tally, user=END_USER, headers={"X-Tally-User": END_USER}).status_code == 200
    text = scrape(tally).text
    assert END_USER not in text
    ours = "\n".join(line for line in text.splitlines() if line.startswith("tally_"))
    label_names = set(re.findall(r'[{,]([a-z_]+)="', ours))
    # ``sink``: a sink's name, which an admin chose (tally_sink_*)
    allowed = {"endpoint", "status", "model", "code", "kind", "le", "sink", "outcome"}
    assert label_names <= allowed, label_names
    assert "user" not in label_names


def test_upstream_errors_are_counted_by_code(tally, upstream):
    upstream.reply(status=503, json={"error": {"message": "overloaded", "code": "overloaded"}})
    assert chat(tally, user=END_USER).status_code == 503
    lines = scrape(tally).text.splitlines()
    assert 'tally_upstream_errors_total{code="overloaded",endpoint="chat.completions"} 1.0' in (
        lines
    )
    model = 'model="openai/gpt-4o-mini"'
    assert f'tally_requests_total{{endpoint="chat.completions",{model},status="503"}} 1.0' in (
        lines
    )


def test_a_database_outage_503_is_counted(app, make_key, monkeypatch):
    key = make_key()
    client = app.test_client()
    before = unavailable_count(client)
    unreachable_database(monkeypatch, app)
    response = client.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 503
    assert unavailable_count(client) == before + 1


def unavailable_count(client) -> float:
    """``tally_database_unavailable_total`` as /metrics shows it (the count of the whole
    test run so far: the counter is the process's)."""
    text = client.get("/metrics").get_data(as_text=True)
    [value] = [
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith("tally_database_unavailable_total ")
    ]
    return value


def test_the_model_label_is_bounded():
    label = metrics.BoundedLabel(2)
    assert [label("a"), label("b"), label("c"), label("a"), label(None)] == [
        "a",
        "b",
        "other",
        "a",
        "unknown",
    ]


def test_a_batch_counts_as_its_calls_one_by_one():
    """The usage writer counts a batch at a time (one write per series, a histogram's
    buckets filled by hand): the exposition is the one ``observe``/``inc`` per call would
    give. Fails if prometheus-client changes how it keeps a histogram."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    amounts = [0.0, 0.05, 0.1, 0.1000001, 0.3, 2.5, 299.0, 300.0, 301.0, 1e9, 0.2]
    by_hand, one_by_one = CollectorRegistry(), CollectorRegistry()
    for registry in (by_hand, one_by_one):
        Histogram("h", "h", ["e"], buckets=metrics.LATENCY_BUCKETS, registry=registry)
    for amount in amounts:
        one_by_one._names_to_collectors["h"].labels("x").observe(amount)
    metrics._observe(by_hand._names_to_collectors["h"].labels("x"), amounts)
    created = re.compile(rb"^h_created.*$", re.M)
    assert created.sub(b"", generate_latest(by_hand)) == created.sub(
        b"", generate_latest(one_by_one)
    )


def test_the_token_gate(make_app, upstream, serve):
    flask_app = make_app(TALLY_UPSTREAM_URL=upstream.url, TALLY_METRICS_TOKEN="scrape-me-123")
    server = serve(flask_app)
    refused = scrape(server)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
    assert refused.json()["error"]["type"] == "invalid_request_error"
    assert scrape(server, "wrong-token").status_code == 401
    allowed = scrape(server, "scrape-me-123")
    assert allowed.status_code == 200
    assert "# TYPE tally_requests_total counter" in allowed.text


def test_the_token_never_reaches_the_logs(make_app, upstream, serve, capfd):
    token = "scrape-me-very-secret"
    flask_app = make_app(TALLY_UPSTREAM_URL=upstream.url, TALLY_METRICS_TOKEN=token)
    try:
        server = serve(flask_app)
        assert scrape(server, token).status_code == 200
        assert scrape(server, token + "x").status_code == 401
        logging.getLogger("tally").warning("a message that quotes %s", token)
        logged = capfd.readouterr().err
        assert "a message that quotes [redacted]" in logged
        assert token not in logged
        assert token not in repr(flask_app.config["TALLY"])
    finally:
        configure_logging("json")


def test_open_without_a_token(tally):
    assert scrape(tally).status_code == 200


def test_one_scrape_counts_every_gunicorn_worker(database_url, upstream, app, make_key, tmp_path):
    """Two workers, concurrent requests (spread over both: each worker's own metric file
    holds some of them), one scrape, whichever worker answers it, counts them all."""
    env = tally_env(
        database_url,
        TALLY_UPSTREAM_URL=upstream.url,
        TALLY_RATELIMIT_STORAGE_URI="",  # unset: the instance's counter file
        TALLY_METRICS_TOKEN="scrape-me-123",
        TMPDIR=str(tmp_path),
    )
    proc = start_gunicorn(env, workers=2)
    try:
        [metrics_dir] = tmp_path.glob("tally-metrics-*")
        key = make_key()
        total = 120
        statuses = fire(proc.url, key, [END_USER], total)
        assert statuses == [200] * total
        assert requests.get(proc.url + "/metrics", timeout=10).status_code == 401
        model = 'model="openai/gpt-4o-mini"'
        line = f'tally_requests_total{{endpoint="chat.completions",{model},status="200"}}'
        expected = f"{line} {float(total)}"

        def scrape() -> str:
            return requests.get(
                proc.url + "/metrics",
                headers={"Authorization": "Bearer scrape-me-123"},
                timeout=10,
            ).text

        # a call is counted with its row, a batch at a time, at most a linger after its
        # answer; then every scrape, whichever worker answers it, has the same totals
        wait_for(lambda: expected in scrape().splitlines(), timeout=5)
        for _ in range(6):
            text = scrape()
            assert expected in text.splitlines()
            assert END_USER not in text
        per_worker = _requests_per_file(metrics_dir)
        assert sum(per_worker.values()) == total
        assert len([n for n in per_worker.values() if n]) == 2, per_worker
    finally:
        stop(proc)
    assert not metrics_dir.exists(), "the master removes its metrics directory at exit"


def _requests_per_file(metrics_dir) -> dict[str, float]:
    """tally_requests_total as each process's own counter file holds it."""
    from prometheus_client.multiprocess import MultiProcessCollector

    counted = {}
    for path in metrics_dir.glob("counter_*.db"):
        samples = [
            sample.value
            for metric in MultiProcessCollector.merge([str(path)], accumulate=True)
            for sample in metric.samples
            if sample.name == "tally_requests_total"
        ]
        counted[path.name] = sum(samples)
    return counted
