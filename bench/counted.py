"""The counted side of bench/instructions.py: one tree's app (or the floor, or the usage
writer alone) warmed, then "ready"; the timed calls once a line comes on stdin; "done",
and another line before it exits. bench/instructions.py runs it under callgrind with the
counting switched on between the two signals.

    python bench/counted.py --requests 300 --users 100 [--writer BATCH | --floor]

Run from the tree to count (its directory is put first on ``sys.path``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # bench.*, after the tree

from bench.targets import mock_upstream, stop, wait_http  # noqa: E402


def main() -> None:
    """Parse the options; count what they name."""
    parser = argparse.ArgumentParser(description="the counted side of bench/instructions.py")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--writer", type=int, metavar="BATCH")
    parser.add_argument("--floor", action="store_true")
    child(parser.parse_args())


def child(args) -> None:
    """In the tree's process: the app, warm; then the timed calls between two signals."""
    if args.writer:
        rows(args)
        return
    mock = mock_upstream()
    port = mock.port
    try:
        wait_http(mock.url("/v1/models"), timeout=120)
        if args.floor:
            floor_calls(args, port)
        else:
            calls(args, port)
    finally:
        stop(mock.proc)


def calls(args, port: int) -> None:
    """Warm every user once, say "ready", wait; the timed calls; "done", wait."""
    sys.path.insert(0, os.getcwd())  # the tree counted, not the one this script is in
    assert "tally" not in sys.modules
    from app import create_app
    from tally import schema
    from tally.keys.api_keys import create_api_key

    folder = tempfile.mkdtemp(prefix="tally-instructions-")
    flask_app = create_app(
        {
            "INSTANCE_PATH": folder,
            "TALLY_UPSTREAM_URL": f"http://127.0.0.1:{port}/v1",
            "TALLY_USAGE_WRITES": "background",
            # the counter file, as under gunicorn (a lone process counts in its memory)
            "TALLY_RATELIMIT_STORAGE_URI": f"tally+lmdb://{folder}/limits.lmdb",
        }
    )
    tally = flask_app.extensions["tally"]
    schema.upgrade(tally.engine)
    with tally.sessions() as session:
        _, key = create_api_key(session, "bench", "bench")
    steady(tally)
    drive(flask_app.test_client(), {"Authorization": f"Bearer {key}"}, args, tally.usage.flush)


def steady(runtime) -> None:
    """Pin the work a process does by the clock, not by the request: under valgrind a
    call takes about 50 times longer, so a cache refreshed every second, or the counter
    file swept every 0.2 s, would run 50 times more often per call than in production,
    and more or less often as the machine is more or less loaded (the count would follow
    the load). Their cost per call is small in production (a refresh a second, a sweep
    of 300 keys every 0.2 s against hundreds of calls) and left out of the count."""
    import importlib

    runtime.cache.max_age = float("inf")  # a version bump still reloads (none comes)
    for module, name in (
        ("tally.limits.runtime", "READY_TRUST"),
        ("tally.limits.storage.lmdb_file", "SWEEP_EVERY"),
    ):
        with contextlib.suppress(ImportError):  # a tree from before it
            setattr(importlib.import_module(module), name, float("inf"))


def floor_calls(args, port: int) -> None:
    """The floor (bench/floor.py: bare Flask and urllib3, the user's id hashed) called as
    Tally is, between the same two signals."""
    from bench.floor import create_app

    client = create_app(upstream_port=port, key="sk-floor").test_client()
    drive(client, {"Authorization": "Bearer sk-floor"}, args, lambda: None)


def caller(client, headers: dict, users: int):
    """``call(index)``: one chat completion through Flask's test client, from end user
    ``index`` modulo ``users``, answered 200 and closed."""
    body = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}

    def call(index: int) -> None:
        answer = client.post(
            "/v1/chat/completions",
            json={**body, "user": f"user-{index % users}"},
            headers=headers,
        )
        assert answer.status_code == 200, answer.data[:200]
        answer.close()  # as a server does once the body is sent: the access log's line

    return call


def drive(client, headers: dict, args, flush) -> None:
    """Every user's call once, "ready", wait; ``args.requests`` calls, flushed, "done",
    wait: callgrind counts between the two waits."""
    call = caller(client, headers, args.users)
    for index in range(args.users):
        call(index)
    flush()
    print("ready", flush=True)
    sys.stdin.readline()
    for index in range(args.requests):
        call(index)
    flush()
    print("done", flush=True)
    sys.stdin.readline()


def rows(args) -> None:
    """``--writer``: ``record_calls`` alone, on a fresh SQLite database, in batches of
    ``args.writer`` (every user's rows made once first); the rows are built before the
    counting starts."""
    sys.path.insert(0, os.getcwd())
    assert "tally" not in sys.modules
    from tally import schema
    from tally.db import make_engine, make_session_factory, utcnow
    from tally.end_users.claims import EndUserClaim
    from tally.usage.call import CallRecord, Outcome
    from tally.usage.records import record_calls

    engine = make_engine(f"sqlite:///{tempfile.mkdtemp(prefix='tally-instructions-')}/w.db")
    schema.upgrade(engine)
    sessions = make_session_factory(engine)

    def batch(first: int, size: int) -> list:
        calls = []
        for n in range(first, first + size):
            user = f"user-{n % args.users}"
            claim = EndUserClaim(external_id=user, source="body")
            call = CallRecord(f"r{n:012d}", None, claim, f"tally_{user}", None, "m", False)
            usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "cost": 1e-4}
            outcome = Outcome(usage=usage, model="m", latency_ms=1.2, cost_source="upstream")
            calls.append((call, outcome, utcnow()))
        return calls

    def write(batches: list) -> None:
        for calls in batches:
            with sessions() as session:
                record_calls(session, calls)

    size = args.writer
    write([batch(first, size) for first in range(0, args.users, size)])
    timed = [batch(args.users + first, size) for first in range(0, args.requests, size)]
    print("ready", flush=True)
    sys.stdin.readline()
    write(timed)
    print("done", flush=True)
    sys.stdin.readline()


if __name__ == "__main__":
    main()
