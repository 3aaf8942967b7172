"""A webhook receiver down under load while Tally (gunicorn) is restarted: the scenario of
issue 21's chaos run, in seconds for tests/sinks/test_gunicorn.py and in minutes for
bench/sinks_chaos.py, which both call :func:`run`.

Steady load (tests.helpers.faults.Load) for ``warmup`` seconds; the receiver (a
tests.helpers.receivers.Receiver: it verifies each Standard Webhooks signature, and the
figures dedupe by ``webhook-id``) goes down (its port closed: connections refused) for
``outage`` seconds, with gunicorn stopped (SIGTERM, a graceful stop) and started again
halfway through; the receiver comes back; ``after`` seconds more load; then the wait
until every answered call's event has arrived (at most ``drain_timeout``).
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from tests.helpers.faults import Load
from tests.helpers.gunicorn import stop
from tests.helpers.receivers import Receiver
from tests.helpers.waiting import wait_for


@dataclass(frozen=True)
class Scenario:
    """How long each phase lasts (seconds), and the load."""

    warmup: float = 3.0
    outage: float = 120.0
    after: float = 3.0
    threads: int = 4
    drain_timeout: float = 300.0


def run(
    start: Callable[[], subprocess.Popen], key: str, receiver: Receiver, scenario: Scenario
) -> dict[str, object]:
    """The scenario against the gunicorn ``start()`` starts (and again for the restart);
    what an operator needs to know of it, in order."""
    proc = start()
    load = Load(proc.url, key, threads=scenario.threads).start()
    try:
        time.sleep(scenario.warmup)
        receiver.down()
        down_at = time.monotonic()
        time.sleep(scenario.outage / 2)
        began = time.monotonic()
        stop(proc)
        proc = start()
        load.url = proc.url  # a new port: the clients follow
        restart = time.monotonic() - began
        time.sleep(max(0.0, scenario.outage - (time.monotonic() - down_at)))
        receiver.up()
        up_at = time.monotonic()
        outage = up_at - down_at
        time.sleep(scenario.after)
        load.stop()
        answered = set(load.answered())
        wait_for(lambda: answered <= set(_ids(receiver)), scenario.drain_timeout, step=0.1)
        drained = time.monotonic() - up_at
        time.sleep(2.0)  # a pass or two more: whatever would come twice comes now
    finally:
        load.stop()
        stop(proc)
    received = Counter(_ids(receiver))
    statuses = load.statuses()
    return {
        "receiver down (s)": round(outage, 1),
        "restart: stop + start (s)": round(restart, 1),
        "requests": len(load.answers),
        "answered (200)": len(answered),
        "no answer (the restart)": statuses.get(0, 0),
        "429 (refused by a limit: no event due)": statuses.get(429, 0),
        "other statuses": sum(n for s, n in statuses.items() if s not in (0, 200, 429)),
        "events received (distinct webhook-id)": len(received),
        "lost (answered 200, no event)": len(answered - set(received)),
        "duplicates (sent again)": sum(n - 1 for n in received.values()),
        "bad signatures": sum(1 for got in receiver.on("/hook") if not got.valid_signature),
        "events received after the receiver returned": sum(
            1
            for when, path, _, status in receiver.tries
            if path == "/hook" and status == 200 and when >= up_at
        ),
        "backlog drained after the receiver returned (s)": round(drained, 1),
    }


def _ids(receiver: Receiver) -> list[str]:
    return [got.headers["webhook-id"] for got in receiver.on("/hook")]
