"""What each step of a call costs Tally, in CPU microseconds per request: the per-step
table issue 19 asks for, so a change can say which step it moved.

    python bench/steps.py [--requests 4000] [--users 5000] [--limits FIELD=VALUE …]

One process, the shipped app (``create_app``: the access log, metrics, the usage
writer on its own thread, limits on a fresh ``tally+memory://`` or ``--limits-file``
counter file) in front of bench/mock_upstream.py, called through Flask's test client
(no HTTP server: what gunicorn and gevent cost is the floor's, bench/run.py) with
``--users`` end users in turn. Each step's function is wrapped for the run with a timer
of this thread's CPU time; a step's time excludes the steps it calls, so the rows add up
to the request's total; "the rest" is Flask, Werkzeug, JSON and everything not named.
The usage writer's thread is reported on its own line (its CPU is the process's minus
the request thread's).

Steps: authentication (the bearer key, through the cache), identity (the end user from
the body), tracking (the active config, the identifier, the upstream body), admission
(limits), forwarding (the upstream client's request, not its wait), relay (reading and
checking the answer), settling (the call's cost, its limits' counters), recording
(queueing its row), logging (the access log line). The metrics are counted a batch at
a time by the usage writer's thread (tally.metrics.count_calls), in its line.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.counted import caller  # noqa: E402
from bench.targets import free_port, wait_http  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


class Steps:
    """Exclusive thread-CPU time per named step (a stack: a step's children are theirs)."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}
        self.stack: list[list] = []  # [name, started, children's time]

    def wrap(self, owner, attribute: str, name: str) -> None:
        """Time ``owner.attribute`` as step ``name`` from now on."""
        original = getattr(owner, attribute)
        steps = self

        def timed(*args, **kwargs):
            steps.stack.append([name, time.thread_time(), 0.0])
            try:
                return original(*args, **kwargs)
            finally:
                step, started, children = steps.stack.pop()
                took = time.thread_time() - started
                steps.spent[step] = steps.spent.get(step, 0.0) + took - children
                if steps.stack:
                    steps.stack[-1][2] += took

        setattr(owner, attribute, timed)


def instrument(steps: Steps) -> None:
    """Wrap each step's function where the request path looks it up."""
    import blueprints.api.calls as calls
    import tally.proxy.call as call
    import tally.proxy.pipeline as pipeline
    import tally.proxy.relay as relay
    from tally import access_log
    from tally.proxy.upstream import UpstreamClient
    from tally.usage.writer.background import UsageWriter

    steps.wrap(calls, "require_key", "authentication")
    steps.wrap(pipeline, "resolve_end_user", "identity")
    steps.wrap(pipeline, "active_config", "tracking")
    steps.wrap(pipeline, "stamp", "tracking")
    steps.wrap(pipeline, "attach", "tracking")
    steps.wrap(pipeline, "admit", "admission")
    steps.wrap(pipeline, "checks_config", "admission")
    steps.wrap(UpstreamClient, "post", "forwarding")
    steps.wrap(relay, "whole", "relay")
    steps.wrap(call, "settle_cost", "settling")
    steps.wrap(call, "count_usage", "settling")
    steps.wrap(UsageWriter, "submit", "recording")
    steps.wrap(access_log.AccessLog, "_write", "logging")


def main() -> None:
    parser = argparse.ArgumentParser(description="CPU µs per request, step by step")
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--limits", nargs="+", metavar="FIELD=VALUE", default=[])
    args = parser.parse_args()

    port = free_port()
    mock = subprocess.Popen(
        [sys.executable, str(ROOT / "bench/mock_upstream.py"), "--port", str(port)],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models")
        run(args, port)
    finally:
        mock.terminate()
        mock.wait()


def run(args: argparse.Namespace, port: int) -> None:
    """Warm every user once, then time ``args.requests`` calls."""
    os.environ.setdefault("TALLY_LOG_FORMAT", "json")
    from app import create_app
    from tally import schema
    from tally.keys.api_keys import create_api_key
    from tally.limits.policy import parse_assignments
    from tally.limits.policy_store import set_policy

    folder = tempfile.mkdtemp(prefix="tally-steps-")
    flask_app = create_app(
        {
            "INSTANCE_PATH": folder,
            "TALLY_UPSTREAM_URL": f"http://127.0.0.1:{port}/v1",
            "TALLY_USAGE_WRITES": "background",
        }
    )
    schema.upgrade(flask_app.extensions["tally"].engine)
    with flask_app.extensions["tally"].sessions() as session:
        _, key = create_api_key(session, "bench", "bench")
        if args.limits:
            set_policy(session, "tier:default", parse_assignments(args.limits), "bench")
    client = flask_app.test_client()
    call = caller(client, {"Authorization": f"Bearer {key}"}, args.users)

    for index in range(args.users):  # every user's counters and rows made once
        call(index)
    flask_app.extensions["tally"].usage.flush()
    steps = Steps()
    instrument(steps)
    thread_started, process_started = time.thread_time(), time.process_time()
    for index in range(args.requests):
        steps.stack.append(["the rest", time.thread_time(), 0.0])
        started = time.thread_time()
        call(index)
        step, _started, children = steps.stack.pop()
        steps.spent[step] = steps.spent.get(step, 0.0) + time.thread_time() - started - children
    flask_app.extensions["tally"].usage.flush()
    thread = time.thread_time() - thread_started
    writer = time.process_time() - process_started - thread
    print_table(steps.spent, thread, writer, args)


def print_table(spent: dict[str, float], thread: float, writer: float, args) -> None:
    """The markdown table: µs per request for each step, the total, the writer thread."""
    per = 1e6 / args.requests
    policy = " ".join(args.limits) or "the shipped default (messages=1000)"
    print(f"CPU per request, step by step: {args.requests} requests, {args.users} users,")
    print(f"limits: {policy}\n")
    print("| step | µs per request | share |")
    print("|---|---|---|")
    order = [
        "authentication",
        "identity",
        "tracking",
        "admission",
        "forwarding",
        "relay",
        "settling",
        "recording",
        "logging",
        "the rest",
    ]
    total = sum(spent.values())
    for name in order:
        value = spent.get(name, 0.0)
        print(f"| {name} | {value * per:.0f} | {100 * value / total:.0f} % |")
    print(f"| **request thread, in all** | {thread * per:.0f} | |")
    print(f"| usage writer thread | {writer * per:.0f} | |")


if __name__ == "__main__":
    main()
