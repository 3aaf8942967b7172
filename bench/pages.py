"""The console's pages at a year of traffic: p50/p95 of the dashboard, the usage page, a
user's page, the identity search and the JSON export of last month, after seeding through
``dev seed``'s code path.

    python bench/pages.py                                  # SQLite, 1,000,000 / 100,000
    python bench/pages.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
    python bench/pages.py --requests 100000 --users 10000  # a quick look
    python bench/pages.py --reuse /tmp/seeded.db           # seed it if missing (kept), time it
    python bench/pages.py --reuse postgresql+psycopg://…/seeded   # or database (kept)
    python bench/pages.py --reuse /tmp/seeded.db --only "users table" --only search

With ``--database-url`` (PostgreSQL), a scratch database is created next to the one named
and dropped at the end. The seed goes through ``seed_demo_traffic`` (``record_calls`` in
batches), and its wall and CPU time are printed. The pages are served in-process by
Flask's test client with a logged-in admin: the figures are the server's work (routing,
session, queries, template), without the HTTP hop. A ``tier:pro`` policy is set (the
seed's users carry ``plan`` metadata) so that the users table's tier sort has tiers to
sort by. Each page is asked for once to warm up, then ``--rounds`` times; the table
gives p50 and p95 in milliseconds. An export is timed until its last byte is read (it
is streamed: its first bytes come much sooner).
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, func, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from app import create_app  # noqa: E402
from tally import schema  # noqa: E402
from tally.db import make_engine, utcnow  # noqa: E402
from tally.demo.seed import seed_demo_traffic  # noqa: E402
from tally.limits.policy_store import set_policy  # noqa: E402
from tally.models import (  # noqa: E402
    EndUser,
    MonthlyUserTotal,
    RequestLog,
    UpstreamIdentifier,
)
from tally.operators.accounts import create_operator  # noqa: E402

PASSWORD = "bench password 123"
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
GOAL_MS = 150
USER_SORTS = ("user", "requests", "cost", "last_seen", "tier", "limit")


def main() -> None:
    args = parse_args()
    with database(args) as url, tempfile.TemporaryDirectory(prefix="tally-bench-") as instance:
        engine = make_engine(url)
        schema.upgrade(engine)
        engine.dispose()
        app = create_app(
            {
                "TALLY_DATABASE_URL": url,
                "INSTANCE_PATH": instance,
                "TALLY_HASH_KEY": "bench-hash-key",
                "TALLY_SECRET_KEY": "bench-secret-key",
            }
        )
        runtime = app.extensions["tally"]
        if not args.seeded:
            seed(runtime, args.requests, args.users)
        client = login(app, runtime)
        with runtime.sessions() as session:  # a named tier: the users table's tier sort
            set_policy(session, "tier:pro", {"messages": 5000}, "bench")  # works for it
        paths = pages(runtime)
        print(f"\n{make_url(url).get_backend_name()}: {args.rounds} rounds per page\n")
        print("| page | p50 (ms) | p95 (ms) | goal p95 |")
        print("|---|---|---|---|")
        for label, path in paths:
            if args.only and not any(word in label for word in args.only):
                continue
            p50, p95 = timed(client, path, args.rounds)
            print(f"| {label} `{path}` | {p50:.1f} | {p95:.1f} | < {GOAL_MS} |")
        runtime.engine.dispose()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--database-url", help="a PostgreSQL URL: a scratch database beside it")
    parser.add_argument(
        "--reuse",
        help="a seeded database URL, or a SQLite file (seeded first if it is missing): kept",
    )
    parser.add_argument(
        "--only", action="append", help="time only the pages whose label holds this (repeatable)"
    )
    args = parser.parse_args()
    args.seeded = bool(args.reuse) and ("://" in args.reuse or os.path.exists(args.reuse))
    return args


@contextmanager
def database(args: argparse.Namespace):
    """The database URL to seed: a scratch PostgreSQL database (dropped afterwards), the
    reused SQLite file, or a new SQLite file in a temporary folder."""
    if args.reuse:  # a database URL as it is, else a SQLite file
        yield args.reuse if "://" in args.reuse else f"sqlite:///{os.path.abspath(args.reuse)}"
        return
    if not args.database_url:
        with tempfile.TemporaryDirectory(prefix="tally-bench-pages-") as folder:
            yield f"sqlite:///{folder}/tally.db"  # some 450 MB: removed afterwards
        return
    name = f"tally_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(args.database_url).set(database=name).render_as_string(False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def seed(runtime, requests: int, users: int) -> None:
    """Seed through dev seed's code path; print its wall and CPU time."""
    wall, cpu = time.perf_counter(), time.process_time()
    with runtime.sessions() as session:
        made = seed_demo_traffic(session, runtime.hash_key, requests=requests, users=users)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"seeded {made.requests:,} requests, {made.users:,} users: {wall:.1f} s wall, ", end="")
    print(f"{cpu:.1f} s CPU in this process (the database server's own time not counted)")
    # What autovacuum does after a bulk load on PostgreSQL: planner statistics, and the
    # trigram indexes' pending lists merged (every batch touched its users' last_seen;
    # unmerged, they made the name search 2-3 times slower). SQLite: statistics only.
    with runtime.engine.connect() as conn:
        is_pg = conn.dialect.name == "postgresql"
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(text("VACUUM ANALYZE" if is_pg else "ANALYZE"))


def login(app, runtime):
    """A test client logged in as a new admin."""
    email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
    with runtime.sessions() as session:
        create_operator(session, email, "admin", PASSWORD, "bench")
    client = app.test_client()
    token = CSRF_META.search(client.get("/login").get_data(as_text=True)).group(1)
    form = {"email": email, "password": PASSWORD, "csrf_token": token}
    assert client.post("/login", data=form).status_code == 303, "login failed"
    return client


def pages(runtime) -> list[tuple[str, str]]:
    """The pages to time: the heaviest user's page and a typical one, searches by name
    (a contains match), by internal id prefix and by the identifiers' prefix (every user
    matches), the users table (no query) by each sort and at a later page, and the usage
    page of one user."""
    with runtime.sessions() as session:
        heavy = session.scalar(
            select(MonthlyUserTotal.user_id).order_by(MonthlyUserTotal.cost.desc()).limit(1)
        )
        count = session.scalar(select(func.count(EndUser.id))) or 1
        typical, name = session.execute(
            select(EndUser.id, EndUser.external_id).order_by(EndUser.id).offset(count // 2).limit(1)
        ).one()
    return [
        ("dashboard", "/"),
        ("usage, last 30 days", "/usage"),
        ("heaviest user's page", f"/identities/{heavy}"),
        ("a typical user's page", f"/identities/{typical}"),
        ("search by name", "/identities?q=lovelace"),
        ("search by id prefix", "/identities?q=demo_user_0420"),
        ("search matching every user (10,000+)", "/identities?q=tally_"),
        ("search matching every user, page 50", "/identities?q=tally_&page=50"),
        ("users table (last seen)", "/identities"),
        *[(f"users table by {s}", f"/identities?sort={s}") for s in USER_SORTS],
        ("users table by cost, page 20", "/identities?sort=cost&page=20"),
        ("users table by requests, page 20", "/identities?sort=requests&page=20"),
        ("usage of one user", f"/usage?user={name}"),
        ("usage of one user by day", f"/usage?user={name}&group_by=day"),
        *request_log_pages(runtime, heavy, typical),
        *exports(),
    ]


def request_log_pages(runtime, heavy: int, typical: int) -> list[tuple[str, str]]:
    """The request log: newest, a page deep in the past, each filter alone, the filters
    that match rarely or never (reading the most index to fill a page), combined ones,
    and one call's page."""
    with runtime.sessions() as session:
        heavy_id, typical_id = (
            session.scalar(select(EndUser.external_id).where(EndUser.id == user_id))
            for user_id in (heavy, typical)
        )
        identifier = session.scalar(
            select(UpstreamIdentifier.identifier).where(UpstreamIdentifier.user_id == typical)
        )
        count = session.scalar(select(func.count(RequestLog.id))) or 1
        deep = session.execute(
            select(RequestLog.created_at, RequestLog.id, RequestLog.request_id)
            .order_by(RequestLog.created_at.desc(), RequestLog.id.desc())
            .offset(count // 2)
            .limit(1)
        ).one()
    before = f"{deep.created_at.strftime('%Y%m%dT%H%M%S.%f')}-{deep.id}"
    day = (utcnow().date() - timedelta(days=3)).isoformat()
    return [
        ("request log, newest", "/requests"),
        ("request log, half a million rows back", f"/requests?before={before}"),
        ("request log, heaviest user", f"/requests?user={heavy_id}"),
        ("request log, a user by identifier", f"/requests?user={identifier}"),
        ("request log, errors", "/requests?status=error"),
        ("request log, refused (none seeded)", "/requests?status=refused"),
        ("request log, ok", "/requests?status=ok"),
        ("request log, embeddings", "/requests?endpoint=embeddings"),
        ("request log, the rarest model", "/requests?model=meta-llama/llama-3.3-70b-instruct"),
        ("request log, a model never used", "/requests?model=openai/gpt-4o"),
        ("request log, a key with no calls", "/requests?key=no-such-key"),
        ("request log, one day", f"/requests?from={day}&to={day}"),
        ("request log, heaviest user's errors", f"/requests?user={heavy_id}&status=error"),
        (
            "request log, heaviest user's refusals (none)",
            f"/requests?user={heavy_id}&status=refused",
        ),
        (
            "request log, a typical user's embeddings",
            f"/requests?user={typical_id}&endpoint=embeddings",
        ),
        (
            "request log, errors of a model on one day",
            f"/requests?status=error&model=meta-llama/llama-3.3-70b-instruct&from={day}&to={day}",
        ),
        ("one call's page", f"/requests/{deep.request_id}"),
    ]


def exports() -> list[tuple[str, str]]:
    """The JSON export of last calendar month (the seed's 30 days end today), grouped by
    model, by day, by tag and by user (a row per user: 100,000 of them)."""
    first_of_this = utcnow().date().replace(day=1)
    last = first_of_this - timedelta(days=1)
    month = f"start={last.replace(day=1).isoformat()}&end={last.isoformat()}"
    groups = ("model", "day", "tag", "metadata:plan", "user")
    paths = [
        (f"JSON export of last month by {g}", f"/usage.json?{month}&group_by={g}") for g in groups
    ]
    page = f"/usage?{month}&group_by=user&after=demo_user_50000"
    return [*paths, ("usage page, last month by user, 100 rows after a cursor", page)]


def timed(client, path: str, rounds: int) -> tuple[float, float]:
    """p50 and p95 (ms) of ``rounds`` GETs of ``path``, after one to warm up."""
    warm = client.get(path)
    warm.get_data()
    warm.close()
    assert warm.status_code == 200, path
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        response = client.get(path)
        response.get_data()  # a streamed export: every byte of it
        times.append((time.perf_counter() - start) * 1000)
        response.close()
        assert response.status_code == 200, path
        # an export's streamed answer keeps its database connection checked out until it
        # is collected (also before issue 20): 40 of them emptied the pool (30)
        gc.collect()
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.95))]


if __name__ == "__main__":
    main()
