"""Issue 21's chaos run: a webhook receiver down for minutes under load, Tally restarted
meanwhile, then the receiver back; are all the answered calls' events delivered?

    .venv/bin/python -m bench.sinks_chaos [--outage 120] [--threads 4] [--workers 2]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres | --database-url URL]

Tally runs under gunicorn with the shipped config and the demo upstream, with an
instance folder of its own and a fresh database: a SQLite file there, or with
``--postgres`` a new PostgreSQL database beside the one named (dropped afterwards), or
``--database-url`` an existing empty one (upgraded, left as the run leaves it).
A webhook sink points at a loopback receiver (tests/helpers/receivers.py) that verifies
each Standard Webhooks signature; the figures dedupe by ``webhook-id``. Steady load;
the receiver down for ``--outage`` seconds, with gunicorn stopped and started again
halfway through; the receiver back; a few seconds more load; then the wait for every
answered call's event (tests/helpers/sink_outage.py, which tests/sinks/test_gunicorn.py
runs in seconds). Prints answered calls, events received, lost (answered 200 without an
event), duplicates (sent twice: fine for a receiver that dedupes, but counted), bad
signatures and the time the backlog took to drain. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import tempfile
from pathlib import Path

from sqlalchemy import func, select

from bench.chaos import fresh_database, print_results
from tally import schema
from tally.db import make_engine, make_session_factory
from tally.keys.api_keys import create_api_key
from tally.models import SinkEvent
from tally.settings import load_settings
from tally.sinks.admin import add_sink
from tests.helpers.gunicorn import start_gunicorn
from tests.helpers.receivers import Receiver
from tests.helpers.sink_outage import Scenario, run


def main() -> None:
    """Parse the options, run the scenario once, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outage", type=float, default=120.0, help="seconds the receiver is down")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load before")
    parser.add_argument("--after", type=float, default=5.0, help="seconds of load after")
    parser.add_argument("--threads", type=int, default=4, help="client threads")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--postgres", metavar="ADMIN_URL", help="a fresh database beside it")
    parser.add_argument("--database-url", help="an existing, empty database instead")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the receiver's access log
    scenario = Scenario(args.warmup, args.outage, args.after, args.threads)
    instance = Path(tempfile.mkdtemp(prefix="tally-sinks-chaos-"))
    with contextlib.ExitStack() as stack:
        if args.database_url:
            database_url = args.database_url
        elif args.postgres:
            url = stack.enter_context(fresh_database(args.postgres))
            database_url = url.render_as_string(hide_password=False)
        else:
            database_url = f"sqlite:///{instance / 'tally.db'}"
        print(f"instance folder {instance} (gunicorn's log: gunicorn.log)")
        print_results(chaos(database_url, instance, args.workers, scenario))


def chaos(database_url: str, instance: Path, workers: int, scenario: Scenario) -> dict:
    """The scenario on ``database_url``; its figures, and what is left in the outbox."""
    engine = make_engine(database_url)
    schema.upgrade(engine)
    receiver = Receiver()
    env = {
        "TALLY_DATABASE_URL": database_url,
        "TALLY_INSTANCE_PATH": str(instance),
        "TALLY_LOG_FORMAT": "text",
    }
    # the secret key gunicorn's processes will read from the instance folder
    settings = load_settings(str(instance), env)
    with make_session_factory(engine)() as session:
        _, key = create_api_key(session, "chaos", "bench")
        _, receiver.webhook_secret = add_sink(
            session, settings.secret_key, "hook", "webhook", receiver.url + "/hook", "bench"
        )
    with open(instance / "gunicorn.log", "ab") as log:
        figures = run(lambda: start_gunicorn(env, workers, stderr=log), key, receiver, scenario)
    with engine.connect() as conn:
        table = SinkEvent.__table__
        figures["outbox: undelivered at the end"] = conn.scalar(
            select(func.count()).where(table.c.delivered_at.is_(None))
        )
    log_text = (instance / "gunicorn.log").read_text(errors="replace")
    figures["log tracebacks"] = log_text.count("Traceback")
    receiver.close()
    engine.dispose()
    return figures


if __name__ == "__main__":
    main()
