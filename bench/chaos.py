"""The database outage of issue 12, on this machine's PostgreSQL, through a TCP proxy
(tests/helpers/faults.py) that is cut and restored: nothing stops the real server.

    .venv/bin/python -m bench.chaos [--outage 8] [--threads 8] [--workers 2] [--stream]

A fresh database is made next to ``--admin-url`` (and dropped afterwards); Tally runs
under gunicorn with the shipped config and the demo upstream, with an instance folder of
its own. Steady load for 3 s, the proxy cut for ``--outage`` s, restored, 3 s more load;
then the spool is waited for. Prints what an operator needs to know: answered, 5xx
(503 and 500 apart), recorded, lost (answered 200 without a row), duplicated, the time
from the restore until every answered call has its row, and the log lines the outage
cost. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import URL, make_url

from tally import schema
from tally.db import make_engine, make_session_factory
from tally.keys.api_keys import create_api_key
from tally.models import RequestLog
from tests.helpers.faults import Load, TcpProxy
from tests.helpers.gunicorn import start_gunicorn, stop
from tests.helpers.waiting import wait_for

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def main() -> None:
    """Parse the options, run the scenario once, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--admin-url", default=ADMIN_URL)
    parser.add_argument("--outage", type=float, default=8.0, help="seconds the proxy is cut")
    parser.add_argument("--threads", type=int, default=8, help="client threads")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--stream", action="store_true", help="streamed calls")
    args = parser.parse_args()
    with fresh_database(args.admin_url) as url:
        print_results(run(url, args))


@contextmanager
def fresh_database(admin_url: str) -> Iterator[URL]:
    """A new, empty PostgreSQL database beside ``admin_url``'s, dropped afterwards."""
    name = f"tally_chaos_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run(url, args) -> dict[str, object]:
    """The scenario; its figures."""
    direct = make_engine(url.render_as_string(hide_password=False))
    schema.upgrade(direct)
    with make_session_factory(direct)() as session:
        _, key = create_api_key(session, "chaos", "bench")
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    instance = Path(tempfile.mkdtemp(prefix="tally-chaos-"))
    log_path = instance / "gunicorn.log"
    env = {
        "TALLY_DATABASE_URL": proxied,
        "TALLY_INSTANCE_PATH": str(instance),
        "TALLY_LOG_FORMAT": "text",
    }
    with open(log_path, "wb") as log_file:
        proc = start_gunicorn(env, workers=args.workers, stderr=log_file)
        try:
            load = Load(proc.url, key, threads=args.threads, stream=args.stream).start()
            time.sleep(3)
            proxy.cut()
            time.sleep(args.outage)
            proxy.restore()
            restored = time.monotonic()
            wait_for(lambda: not list(instance.glob("usage-spool/*.spool")), 120, step=0.05)
            drained = time.monotonic() - restored
            time.sleep(max(0.0, 3 - drained))
            load.stop()
            answered = set(load.answered())
            wait_for(lambda: answered <= set(_rows(direct)), 120, step=0.1)
            recorded_after = time.monotonic() - restored
        finally:
            stop(proc)
            proxy.close()
    rows = _rows(direct)
    direct.dispose()
    log = log_path.read_text(errors="replace")
    statuses = load.statuses()
    return {
        "requests": len(load.answers),
        "answered (200)": len(answered),
        "503": statuses.get(503, 0),
        "500": statuses.get(500, 0),
        "other 5xx": sum(n for s, n in statuses.items() if 500 < s < 600 and s != 503),
        "broken (no answer)": statuses.get(0, 0),
        "recorded": sum(rows.values()),
        "lost": len(answered - set(rows)),
        "duplicated": sum(n - 1 for n in rows.values() if n > 1),
        "spool drained after restore (s)": round(drained, 1),
        "every answered call recorded after restore (s)": round(recorded_after, 1),
        "log lines 'database unavailable'": log.count("database unavailable"),
        "log tracebacks": log.count("Traceback"),
    }


def _rows(engine) -> Counter:
    with engine.connect() as conn:
        return Counter(conn.scalars(select(RequestLog.request_id)).all())


def print_results(results: dict[str, object]) -> None:
    """A two-column table, Markdown so it pastes into docs/operations.md."""
    print("| measure | value |\n|---|---|")
    for name, value in results.items():
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
