"""Faults under load, through the shipped gunicorn config (tests.helpers.faults): the
database cut for 5 s, the SQLite file locked for 5 s, the usage writer process killed,
the instance stopped with streams open. Whatever happens: no 500, and every answered
call has exactly one row once the database (or the writer) is back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from tally import schema
from tally.db import make_engine, make_session_factory
from tally.keys.api_keys import create_api_key
from tally.models import RequestLog, UpstreamIdentifier
from tally.usage.totals import TABLES
from tests.helpers.faults import Load, TcpProxy
from tests.helpers.gunicorn import start_gunicorn, stop, tally_env, writer_pids
from tests.helpers.totals import assert_same, fresh_aggregate, stored
from tests.helpers.waiting import wait_for

ON_POSTGRES = (os.environ.get("TALLY_TEST_DATABASE_URL") or "").startswith("postgresql")


def gunicorn_env(database_url: str, instance: Path) -> dict[str, str]:
    """Tally on ``database_url`` and the demo upstream, with its own instance folder."""
    return tally_env(database_url, TALLY_INSTANCE_PATH=str(instance))


def recorded(engine) -> Counter:
    """How many rows each request id has."""
    with engine.connect() as conn:
        return Counter(conn.scalars(select(RequestLog.request_id)).all())


def assert_all_recorded(engine, load: Load, instance: Path, timeout: float = 25) -> None:
    """No 500, no broken answer, and every 200 answer's request id exactly once in the
    table (replayed from the spool if need be, which is then empty); identifiers'
    ``request_count`` add up to the rows."""
    statuses = load.statuses()
    assert 500 not in statuses and 0 not in statuses, statuses
    answered = load.answered()
    assert answered, statuses

    def complete() -> Counter | None:
        rows = recorded(engine)
        return rows if set(answered) <= set(rows) else None

    rows = wait_for(complete, timeout, step=0.1)
    assert rows, f"{len(set(answered) - set(recorded(engine)))} answered calls have no row"
    assert max(rows.values()) == 1
    with engine.connect() as conn:
        counted = conn.scalar(select(func.sum(UpstreamIdentifier.request_count)))
    assert counted == sum(rows.values())
    assert wait_for(lambda: not list(instance.glob("usage-spool/*.spool")), 10, step=0.1)
    with Session(engine) as session:  # replays counted once in the daily totals too
        for table in TABLES:
            assert_same(fresh_aggregate(session, table), stored(session, table))


def run_load(url: str, key: str, fault, *, stream: bool = False, before: float = 1.5) -> Load:
    """Load for ``before`` seconds, then ``fault()`` (which returns when it is over), then
    1.5 s more of load."""
    load = Load(url, key, threads=6, stream=stream).start()
    time.sleep(before)
    try:
        fault()
        time.sleep(1.5)
    finally:
        load.stop()
    return load


@pytest.mark.skipif(not ON_POSTGRES, reason="cuts a TCP connection: needs PostgreSQL")
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streams-ending-in-outage"])
def test_database_cut_for_5s_under_load(app, make_key, database_url, tmp_path, stream):
    url = make_url(database_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    instance = tmp_path / "instance"
    proc = start_gunicorn(gunicorn_env(proxied, instance), workers=2)

    def outage() -> None:
        proxy.cut()
        time.sleep(5)
        proxy.restore()

    try:
        load = run_load(proc.url, make_key(), outage, stream=stream)
        assert_all_recorded(app.extensions["tally"].engine, load, instance)
    finally:
        stop(proc)
        proxy.close()


@pytest.mark.skipif(not ON_POSTGRES, reason="cuts a TCP connection: needs PostgreSQL")
def test_writer_killed_during_an_outage(app, make_key, database_url, tmp_path):
    """The workers spool their own rows while the writer is away, and the restarted
    writer adopts what the killed one had spooled."""
    url = make_url(database_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    instance = tmp_path / "instance"
    proc = start_gunicorn(gunicorn_env(proxied, instance), workers=2)

    def outage() -> None:
        proxy.cut()
        time.sleep(2)  # the writer process spools meanwhile
        [writer] = writer_pids(proc.pid)
        os.kill(writer, signal.SIGKILL)
        time.sleep(3)
        proxy.restore()

    try:
        load = run_load(proc.url, make_key(), outage)
        assert_all_recorded(app.extensions["tally"].engine, load, instance)
    finally:
        stop(proc)
        proxy.close()


@pytest.mark.skipif(
    not (ON_POSTGRES and os.environ.get("TALLY_TEST_REDIS_URL")), reason="needs Redis"
)
def test_redis_cut_for_5s_under_load(app, make_key, database_url, tmp_path):
    """Redis holds the cache version of several instances: without it every lookup reads
    the database, and nothing fails."""
    redis_url = make_url(os.environ["TALLY_TEST_REDIS_URL"])
    proxy = TcpProxy(redis_url.host or "127.0.0.1", redis_url.port or 6379)
    env = gunicorn_env(database_url, tmp_path / "instance")
    env["TALLY_RATELIMIT_STORAGE_URI"] = f"redis://127.0.0.1:{proxy.port}/{redis_url.database}"
    proc = start_gunicorn(env)

    def outage() -> None:
        proxy.cut()
        time.sleep(5)
        proxy.restore()

    try:
        load = run_load(proc.url, make_key(), outage)
        assert_all_recorded(app.extensions["tally"].engine, load, tmp_path / "instance")
    finally:
        stop(proc)
        proxy.close()


def test_sqlite_file_locked_for_5s_under_load(tmp_path):
    """Runs on SQLite whatever the suite's database: a file of its own."""
    path = tmp_path / "locked.db"
    engine = make_engine(f"sqlite:///{path}")
    schema.upgrade(engine)
    with make_session_factory(engine)() as session:
        _, key = create_api_key(session, "load", "test")
    instance = tmp_path / "instance"
    proc = start_gunicorn(gunicorn_env(f"sqlite:///{path}", instance))
    hold = "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
    hold += "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(5); c.close()"

    def lock() -> None:
        locker = subprocess.Popen(
            [sys.executable, "-c", hold, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert locker.stdout.readline().strip() == "locked"
        assert locker.wait(30) == 0

    try:
        load = run_load(proc.url, key, lock)
        assert_all_recorded(engine, load, instance)
    finally:
        stop(proc)
        engine.dispose()


def test_sigkill_of_the_writer_process_loses_no_answered_row(app, make_key, database_url, tmp_path):
    instance = tmp_path / "instance"
    proc = start_gunicorn(gunicorn_env(database_url, instance))
    [writer] = writer_pids(proc.pid)

    def kill() -> None:
        os.kill(writer, signal.SIGKILL)
        restarted = wait_for(
            lambda: [p for p in writer_pids(proc.pid) if p != writer], 10, step=0.1
        )
        assert restarted, "the usage writer process was not started again"

    try:
        load = run_load(proc.url, make_key(), kill)
        assert_all_recorded(app.extensions["tally"].engine, load, instance)
    finally:
        stop(proc)


def test_sigterm_with_streams_open_ends_them_cleanly_and_records_them(
    app, make_key, database_url, tmp_path
):
    instance = tmp_path / "instance"
    proc = start_gunicorn(gunicorn_env(database_url, instance))
    key = make_key()
    streams = Load(proc.url, key, threads=6, stream=True).start()
    calls = Load(proc.url, key, threads=2).start()
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    assert proc.wait(60) == 0
    took = time.monotonic() - started
    for load in (streams, calls):
        load.stop()
        # After the SIGTERM new connections are refused (status 0, no request id); an
        # answer that began must end whole.
        assert not [rid for status, rid in load.answers if status == 0 and rid]
        assert 500 not in load.statuses()
    assert took < 30
    rows = recorded(app.extensions["tally"].engine)
    answered = streams.answered() + calls.answered()
    assert answered and set(answered) <= set(rows)
    assert max(rows.values()) == 1
