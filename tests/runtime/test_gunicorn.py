"""The shipped gunicorn config, run for real: SIGTERM lets in-flight streams finish and
their usage rows are written before the workers exit; a database that makes the usage
writer wait does not make the API wait."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import requests
from sqlalchemy import create_engine

from tests.helpers.gunicorn import COMMAND, ROOT
from tests.helpers.payloads import chunks
from tests.helpers.rows import request_rows

WORDS = [f"w{i} " for i in range(10)]


def test_sigterm_lets_a_stream_finish_and_writes_its_row(gunicorn, upstream, app, make_key):
    upstream.reply(events=chunks(WORDS), delay=0.15)
    response = requests.post(
        gunicorn.url + "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        headers={"Authorization": f"Bearer {make_key()}", "X-Tally-User": "u-1"},
        stream=True,
        timeout=30,
    )
    assert response.status_code == 200
    lines = response.iter_lines()
    received = [next(line for line in lines if line.startswith(b"data:"))]
    gunicorn.send_signal(signal.SIGTERM)  # mid-stream: nine words still to come
    received += [line for line in lines if line.startswith(b"data:")]
    assert received[-1] == b"data: [DONE]"
    assert b"".join(received).count(b'"content": "w') == len(WORDS)
    assert gunicorn.wait(timeout=60) == 0
    [row] = request_rows(app)
    assert (row.status, row.stream, row.completion_tokens) == (200, True, len(WORDS))
    assert row.user.external_id == "u-1"


def test_sigterm_when_idle_exits_at_once(gunicorn):
    started = time.monotonic()
    gunicorn.send_signal(signal.SIGTERM)
    assert gunicorn.wait(timeout=30) == 0
    assert time.monotonic() - started < 15


def test_a_locked_database_does_not_stall_the_api(gunicorn, upstream, app, make_key, database_url):
    """The usage writer's batches run on a native thread: while one waits for a database
    lock (SQLite's busy wait is a C sleep that would stop a gevent worker's whole event
    loop), the worker goes on answering."""
    key = make_key()
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {key}", "X-Tally-User": "u-1"}

    def chat() -> float:
        started = time.monotonic()
        response = requests.post(
            gunicorn.url + "/v1/chat/completions", json=body, headers=headers, timeout=20
        )
        assert response.status_code == 200
        return time.monotonic() - started

    chat()  # key and config now cached: the API path reads nothing from the database
    deadline = time.monotonic() + 10
    while len(request_rows(app)) < 1:
        assert time.monotonic() < deadline, "the first row was never written"
        time.sleep(0.05)
    locker = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with locker.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN EXCLUSIVE")
        else:
            conn.exec_driver_sql("BEGIN")
            conn.exec_driver_sql("LOCK TABLE request_log IN EXCLUSIVE MODE")
        chat()  # its row's batch now waits for the lock
        time.sleep(0.3)
        durations = [chat() for _ in range(5)]
        assert len(request_rows(app)) == 1  # the writer is indeed held up
        conn.exec_driver_sql("COMMIT")
    locker.dispose()
    assert max(durations) < 1.0, durations
    deadline = time.monotonic() + 10
    while len(request_rows(app)) < 7:
        assert time.monotonic() < deadline, "rows held up by the lock were not written"
        time.sleep(0.05)


def test_a_bad_server_setting_stops_gunicorn_with_one_line_naming_it():
    env = {**os.environ, "TALLY_WORKERS": "two"}
    result = subprocess.run(
        COMMAND,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "gunicorn.conf.py: TALLY_WORKERS must be a whole number, got 'two'"
    )
    assert "Traceback" not in result.stderr
