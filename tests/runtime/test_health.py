"""Probes (/healthz, /readyz) and the structured logs."""

from __future__ import annotations

import io
import json
import logging
import os
import sys

import pytest
from sqlalchemy import text

from app import create_app
from tally.logs import JsonFormatter, Redactor, configure_logging
from tests.helpers.settings import HASH_KEY


def test_healthz_says_the_process_is_alive(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_readyz_checks_database_and_limiter_storage(make_app):
    redis_url = os.environ.get("TALLY_TEST_REDIS_URL")
    overrides = {"TALLY_RATELIMIT_STORAGE_URI": redis_url} if redis_url else {}
    response = make_app(**overrides).test_client().get("/readyz")
    assert response.status_code == 200
    assert response.json == {
        "status": "ready",
        "checks": {"database": "ok", "limiter_storage": "ok"},
    }
    assert response.headers["Cache-Control"] == "no-store"


def test_readyz_is_503_when_the_database_is_unreachable(tmp_path):
    app = create_app(
        {
            "INSTANCE_PATH": str(tmp_path / "instance"),
            "TALLY_DATABASE_URL": f"sqlite:///{tmp_path}/missing-dir/tally.db",
            "TALLY_HASH_KEY": HASH_KEY,
            "TALLY_SECRET_KEY": "s",
            "TESTING": True,
        }
    )
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["checks"] == {"database": "unreachable", "limiter_storage": "ok"}
    assert "missing-dir" not in response.get_data(as_text=True)
    app.extensions["tally"].engine.dispose()


def test_readyz_is_503_when_the_limiter_storage_is_unreachable(make_app):
    app = make_app(TALLY_RATELIMIT_STORAGE_URI="redis://:hunter2@127.0.0.1:1/0")
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["checks"] == {"database": "ok", "limiter_storage": "unreachable"}
    assert "hunter2" not in response.get_data(as_text=True)


@pytest.fixture
def log_lines():
    """Capture what the JSON handler writes; restore plain stderr logging afterwards."""
    stream = io.StringIO()

    def lines() -> list[dict]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    lines.stream = stream
    yield lines
    configure_logging("json")


def test_every_request_is_logged_as_json_with_its_request_id(make_app, make_key, log_lines):
    app = make_app(TALLY_UPSTREAM_API_KEY="sk-up-very-secret")
    configure_logging("json", ["sk-up-very-secret"], stream=log_lines.stream)
    key = make_key()
    response = app.test_client().post(
        "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "user": "u-1"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200
    assert not [entry for entry in log_lines() if entry["logger"] == "tally.access"]
    response.close()  # as every WSGI server does once the body is sent: then the line
    [line] = [entry for entry in log_lines() if entry["logger"] == "tally.access"]
    assert line["request_id"] == response.headers["X-Request-Id"]
    assert (line["method"], line["path"], line["status"]) == ("POST", "/v1/chat/completions", 200)
    assert line["level"] == "INFO" and isinstance(line["duration_ms"], float)
    raw = log_lines.stream.getvalue()
    assert key not in raw and "u-1" not in raw


def test_secrets_are_masked_in_messages_and_tracebacks():
    formatter = JsonFormatter(Redactor(["sk-up-very-secret"]))
    try:
        raise RuntimeError("upstream said: bad key sk-up-very-secret for Bearer tly_abcdefgh123")
    except RuntimeError:
        record = logging.LogRecord(
            "t", logging.ERROR, __file__, 1, "key %s", ("tly_abcdefghijk",), exc_info=True
        )
        record.exc_info = sys.exc_info()
    line = json.loads(formatter.format(record))
    assert line["message"] == "key tly_[redacted]"
    assert "sk-up-very-secret" not in line["exc"] and "tly_abcdefgh123" not in line["exc"]
    assert "Bearer [redacted]" in line["exc"]


def test_sql_errors_never_carry_the_internal_user_id(app):
    engine = app.extensions["tally"].engine
    with pytest.raises(Exception) as failure, engine.connect() as conn:
        conn.execute(text("SELECT * FROM no_such_table WHERE x = :u"), {"u": "user-secret-42"})
    assert "user-secret-42" not in str(failure.value)


def test_a_stream_is_logged_once_sent_with_its_whole_duration(make_app, make_key, log_lines):
    app = make_app(DEMO_TOKEN_DELAY=0.05)
    configure_logging("json", stream=log_lines.stream)
    key = make_key()
    response = app.test_client().post(
        "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200
    assert not [entry for entry in log_lines() if entry["logger"] == "tally.access"]
    assert b"[DONE]" in response.get_data()
    response.close()
    [line] = [entry for entry in log_lines() if entry["logger"] == "tally.access"]
    assert line["request_id"] == response.headers["X-Request-Id"] and line["status"] == 200
    assert line["duration_ms"] >= 100  # the demo's tokens, 50 ms apart: the whole stream
