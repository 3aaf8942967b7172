"""A sink taking one request per event (webhooks, Stripe, Slack): a receiver that may be
down is sent one event; one that answers gets the backlog several requests at once; a
failure worth retrying stops what comes after it, whose events wait their turn."""

from __future__ import annotations

import threading
import time

from tally.sinks.senders import (
    DELIVERED,
    IN_FLIGHT,
    RETRY,
    Target,
    Transport,
    Waiting,
    send_webhook,
)

EVENTS = [Waiting(n, f"req{n:02d}", "llm.usage", {"id": f"req{n:02d}"}) for n in range(20)]
TARGET = Target("webhook", "http://127.0.0.1:9/hook", "whsec_" + "QUJD" * 8)


class Scripted(Transport):
    """Answers 503 to the events named, 200 to the others, a moment later each; notes
    the ids sent and the most requests in flight at once."""

    def __init__(self, failing: set[str]):
        super().__init__()
        self.failing, self.sent, self.most = failing, [], 0
        self._lock, self._now = threading.Lock(), 0

    def post(self, url, body, headers):
        with self._lock:
            self._now += 1
            self.most = max(self.most, self._now)
            self.sent.append(headers["webhook-id"])
        time.sleep(0.02)
        with self._lock:
            self._now -= 1
        return (503, "busy") if headers["webhook-id"] in self.failing else (200, "{}")


def test_a_receiver_that_may_be_down_is_sent_one_event():
    transport = Scripted({"req00"})
    results = send_webhook(transport, TARGET, EVENTS, 1_700_000_000)
    assert [r.outcome for r in results] == [RETRY] and transport.sent == ["req00"]


def test_a_backlog_goes_several_at_once_until_a_failure():
    transport = Scripted({"req06"})
    results = send_webhook(transport, TARGET, EVENTS, 1_700_000_000)
    # the first alone, then a group of IN_FLIGHT holding the failure: nothing after it
    assert len(results) == 1 + IN_FLIGHT and transport.sent[0] == "req00"
    assert sorted(transport.sent) == [f"req{n:02d}" for n in range(1 + IN_FLIGHT)]
    assert [r.outcome for r in results] == [DELIVERED] * 6 + [RETRY] + [DELIVERED] * 2
    assert 1 < transport.most <= IN_FLIGHT
    everything = send_webhook(Scripted(set()), TARGET, EVENTS, 1_700_000_000)
    assert [r.outcome for r in everything] == [DELIVERED] * len(EVENTS)
